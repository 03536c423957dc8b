"""The checkout state machine, and what a payment's success means for a checkout (pure rules)."""

from __future__ import annotations

from enum import StrEnum

from kassa.states import Machine


class CheckoutState(StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# A checkout that expired may still complete: its payment arrived late and the stock could be
# held again (see completion.py). Cancelling twice changes nothing.
CHECKOUT = Machine(
    "checkout",
    CheckoutState,
    {
        CheckoutState.OPEN: frozenset(
            {CheckoutState.COMPLETED, CheckoutState.CANCELLED, CheckoutState.EXPIRED}
        ),
        CheckoutState.EXPIRED: frozenset({CheckoutState.COMPLETED}),
        CheckoutState.COMPLETED: frozenset(),
        CheckoutState.CANCELLED: frozenset(),
    },
    already_done=frozenset(
        {
            (CheckoutState.CANCELLED, CheckoutState.CANCELLED),
            (CheckoutState.COMPLETED, CheckoutState.COMPLETED),
            (CheckoutState.EXPIRED, CheckoutState.EXPIRED),
        }
    ),
)


class Success(StrEnum):
    """What a provider's success for a checkout's payment comes to."""

    COMPLETE = "complete"  # open, its hold still active: commit the hold, create the order
    LATE = "late"  # its hold lapsed: hold the stock again; refund if it cannot be had
    REFUND_CANCELLED = "refund_cancelled"  # the buyer (or a failed start) ended it: refund
    ALREADY_DONE = "already_done"  # completed, or refunded already: nothing more to do


def success_means(checkout_state: str, *, hold_active: bool, already_refunded: bool) -> Success:
    """The decision behind completion. `hold_active`: the hold is active and not yet due."""
    if checkout_state == CheckoutState.COMPLETED:
        return Success.ALREADY_DONE
    if already_refunded:
        return Success.ALREADY_DONE
    if checkout_state == CheckoutState.CANCELLED:
        return Success.REFUND_CANCELLED
    if checkout_state == CheckoutState.OPEN and hold_active:
        return Success.COMPLETE
    return Success.LATE
