"""Every state machine, pinned pair by pair (pure rules, microseconds).

`EXPECTED` lists, per machine, the moves the design allows and the requests that change nothing
(already done); every other pair must be refused with `invalid_transition` naming `from` and `to`.
`test_allowing_any_forbidden_move_is_caught` is the mutation check: for every machine and every
forbidden pair, a copy of the table that allows that one pair fails the pin.
"""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Any

import pytest

from kassa.checkout.states import CHECKOUT, CheckoutState, Success, success_means
from kassa.errors import InvalidTransition
from kassa.inventory.states import HOLD
from kassa.orders.states import ORDER, ORDER_PAYMENT, order_payment_status
from kassa.payments.states import PAYMENT, REFUND, refunded_status
from kassa.states import Machine

MACHINES: dict[str, Machine[Any]] = {
    "hold": HOLD,
    "checkout": CHECKOUT,
    "payment": PAYMENT,
    "refund": REFUND,
    "order": ORDER,
    "order_payment": ORDER_PAYMENT,
}

# (allowed moves, already-done requests), written out from API.md and DESIGN.md.
EXPECTED: dict[str, tuple[set[tuple[str, str]], set[tuple[str, str]]]] = {
    "hold": (
        {("active", "committed"), ("active", "released"), ("active", "expired")},
        {
            ("committed", "committed"),
            ("released", "released"),
            ("expired", "expired"),
            ("expired", "released"),
        },
    ),
    "checkout": (
        {
            ("open", "completed"),
            ("open", "cancelled"),
            ("open", "expired"),
            ("expired", "completed"),
        },
        {("cancelled", "cancelled"), ("completed", "completed"), ("expired", "expired")},
    ),
    "payment": (
        {
            ("creating", "pending"),
            ("creating", "failed"),
            ("pending", "processing"),
            ("pending", "succeeded"),
            ("pending", "failed"),
            ("pending", "requires_review"),
            ("processing", "succeeded"),
            ("processing", "failed"),
            ("processing", "requires_review"),
            ("failed", "processing"),
            ("failed", "succeeded"),
            ("failed", "requires_review"),
            ("succeeded", "partially_refunded"),
            ("succeeded", "refunded"),
            ("partially_refunded", "partially_refunded"),
            ("partially_refunded", "refunded"),
            ("partially_refunded", "succeeded"),
            ("refunded", "partially_refunded"),
            ("refunded", "succeeded"),
        },
        {
            ("succeeded", "succeeded"),
            ("partially_refunded", "succeeded"),
            ("refunded", "succeeded"),
            ("failed", "failed"),
            ("requires_review", "requires_review"),
            ("requires_review", "succeeded"),
            ("requires_review", "failed"),
            ("succeeded", "failed"),
            ("partially_refunded", "failed"),
            ("refunded", "failed"),
        },
    ),
    "refund": (
        {("pending", "succeeded"), ("pending", "failed"), ("succeeded", "failed")},
        {("succeeded", "succeeded"), ("failed", "failed")},
    ),
    "order": (
        {
            ("pending", "paid"),
            ("pending", "cancelled"),
            ("paid", "processing"),
            ("paid", "cancelled"),
            ("processing", "shipped"),
            ("processing", "cancelled"),
            ("shipped", "delivered"),
            ("delivered", "returned"),
        },
        set(),
    ),
    "order_payment": (
        {
            ("unpaid", "paid"),
            ("paid", "partially_refunded"),
            ("paid", "refunded"),
            ("partially_refunded", "partially_refunded"),
            ("partially_refunded", "refunded"),
            ("partially_refunded", "paid"),
            ("refunded", "partially_refunded"),
            ("refunded", "paid"),
        },
        set(),
    ),
}


def outcome(machine: Machine[Any], current: str, target: str) -> bool | str:
    """plan(): True (move), False (already done), or the refusal as ("from", "to")."""
    try:
        return machine.plan(current, target)
    except InvalidTransition as refused:
        assert refused.code == "invalid_transition"
        assert refused.status == 409
        return f"refused {refused.extra['from']}->{refused.extra['to']}"


def expected_outcome(name: str, current: str, target: str) -> bool | str:
    moves, done = EXPECTED[name]
    if (current, target) in done:
        return False
    if (current, target) in moves:
        return True
    return f"refused {current}->{target}"


def pin(name: str, machine: Machine[Any]) -> list[tuple[str, str]]:
    """The pairs where the machine disagrees with the design (empty: it agrees)."""
    states: type[StrEnum] = machine.states
    return [
        (str(a), str(b))
        for a, b in itertools.product(states, states)
        if outcome(machine, a, b) != expected_outcome(name, a, b)
    ]


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_pair_of_every_machine_is_what_the_design_says(name: str) -> None:
    assert pin(name, MACHINES[name]) == []


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_allowing_any_forbidden_move_is_caught(name: str) -> None:
    machine = MACHINES[name]
    moves, done = EXPECTED[name]
    forbidden = [
        (a, b)
        for a, b in itertools.product(machine.states, machine.states)
        if (a, b) not in moves and (a, b) not in done
    ]
    assert forbidden, "every machine forbids something"
    for a, b in forbidden:
        mutated = dict(machine.moves)
        mutated[a] = mutated[a] | {b}
        broken = Machine(name, machine.states, mutated, already_done=machine.already_done)
        assert pin(name, broken) == [(str(a), str(b))], (a, b)


def test_check_names_from_and_to() -> None:
    with pytest.raises(InvalidTransition) as refused:
        ORDER.check("shipped", "cancelled")
    assert refused.value.extra == {"from": "shipped", "to": "cancelled"}
    assert "order" in refused.value.detail


def test_a_machine_must_have_a_row_for_every_state() -> None:
    with pytest.raises(ValueError, match="no row"):
        Machine("broken", CheckoutState, {CheckoutState.OPEN: frozenset()})


@pytest.mark.parametrize(
    ("state", "hold_active", "refunded", "means"),
    [
        ("open", True, False, Success.COMPLETE),
        ("open", False, False, Success.LATE),
        ("expired", False, False, Success.LATE),
        ("expired", True, False, Success.LATE),
        ("cancelled", False, False, Success.REFUND_CANCELLED),
        ("cancelled", True, False, Success.REFUND_CANCELLED),
        ("completed", False, False, Success.ALREADY_DONE),
        ("completed", True, True, Success.ALREADY_DONE),
        ("open", True, True, Success.ALREADY_DONE),
        ("expired", False, True, Success.ALREADY_DONE),
        ("cancelled", False, True, Success.ALREADY_DONE),
    ],
)
def test_what_a_success_means_for_a_checkout(
    state: str, hold_active: bool, refunded: bool, means: Success
) -> None:
    assert success_means(state, hold_active=hold_active, already_refunded=refunded) is means


@pytest.mark.parametrize(
    ("paid", "refunded", "payment", "order"),
    [
        (100, 0, "succeeded", "paid"),
        (100, 1, "partially_refunded", "partially_refunded"),
        (100, 99, "partially_refunded", "partially_refunded"),
        (100, 100, "refunded", "refunded"),
    ],
)
def test_status_after_refunds(paid: int, refunded: int, payment: str, order: str) -> None:
    assert refunded_status(paid, refunded) == payment
    assert order_payment_status(paid, refunded) == order
