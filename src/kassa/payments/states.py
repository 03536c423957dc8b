"""The payment and refund state machines."""

from __future__ import annotations

from enum import StrEnum

from kassa.states import Machine


class PaymentStatus(StrEnum):
    CREATING = "creating"  # recorded; the provider has not answered yet
    PENDING = "pending"  # the provider has the payment; the buyer has not paid yet
    PROCESSING = "processing"  # the buyer submitted payment details; the provider is working
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REQUIRES_REVIEW = "requires_review"  # the provider took a different amount or currency
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


P = PaymentStatus
# A failed payment may be tried again (processing) or still succeed (events arrive in any order).
# A refund moves a paid payment to (partially_)refunded when it is asked for; a refund the
# provider refuses moves it back. A success reported twice changes nothing.
PAYMENT = Machine(
    "payment",
    PaymentStatus,
    {
        P.CREATING: frozenset({P.PENDING, P.FAILED}),
        P.PENDING: frozenset({P.PROCESSING, P.SUCCEEDED, P.FAILED, P.REQUIRES_REVIEW}),
        P.PROCESSING: frozenset({P.SUCCEEDED, P.FAILED, P.REQUIRES_REVIEW}),
        P.FAILED: frozenset({P.PROCESSING, P.SUCCEEDED, P.REQUIRES_REVIEW}),
        P.SUCCEEDED: frozenset({P.PARTIALLY_REFUNDED, P.REFUNDED}),
        P.PARTIALLY_REFUNDED: frozenset({P.PARTIALLY_REFUNDED, P.REFUNDED, P.SUCCEEDED}),
        P.REFUNDED: frozenset({P.PARTIALLY_REFUNDED, P.SUCCEEDED}),
        P.REQUIRES_REVIEW: frozenset(),
    },
    already_done=frozenset(
        {
            (P.SUCCEEDED, P.SUCCEEDED),
            (P.PARTIALLY_REFUNDED, P.SUCCEEDED),
            (P.REFUNDED, P.SUCCEEDED),
            (P.FAILED, P.FAILED),
            (P.REQUIRES_REVIEW, P.REQUIRES_REVIEW),
            (P.REQUIRES_REVIEW, P.SUCCEEDED),
            (P.REQUIRES_REVIEW, P.FAILED),
            # A failure reported after the success: the money was taken, the failure is stale.
            (P.SUCCEEDED, P.FAILED),
            (P.PARTIALLY_REFUNDED, P.FAILED),
            (P.REFUNDED, P.FAILED),
        }
    ),
)
# Statuses in which money was taken.
PAID = frozenset({P.SUCCEEDED, P.PARTIALLY_REFUNDED, P.REFUNDED})


def refunded_status(paid_amount: int, refunded_amount: int) -> PaymentStatus:
    """What a paid payment's status is once `refunded_amount` of it is refunded (or asked for)."""
    if refunded_amount <= 0:
        return P.SUCCEEDED
    return P.REFUNDED if refunded_amount >= paid_amount else P.PARTIALLY_REFUNDED


class RefundStatus(StrEnum):
    PENDING = "pending"  # counted against the payment; being sent or waiting for the provider
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the provider refused: given back to the payment and the order


REFUND = Machine(
    "refund",
    RefundStatus,
    {
        RefundStatus.PENDING: frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED}),
        # A refund can fail after the provider first reported it done (Stripe says so of
        # refunds to some cards): the money did not go back, and Kassa gives it back.
        RefundStatus.SUCCEEDED: frozenset({RefundStatus.FAILED}),
        RefundStatus.FAILED: frozenset(),
    },
    already_done=frozenset(
        {
            (RefundStatus.SUCCEEDED, RefundStatus.SUCCEEDED),
            (RefundStatus.FAILED, RefundStatus.FAILED),
        }
    ),
)
