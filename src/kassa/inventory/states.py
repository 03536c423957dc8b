"""The hold state machine."""

from __future__ import annotations

from enum import StrEnum

from kassa.states import Machine


class HoldState(StrEnum):
    ACTIVE = "active"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


# Asking for the state a hold is already in, or releasing a hold whose stock already came back
# by expiry, changes nothing and is not an error.
HOLD = Machine(
    "hold",
    HoldState,
    {
        HoldState.ACTIVE: frozenset({HoldState.COMMITTED, HoldState.RELEASED, HoldState.EXPIRED}),
        HoldState.COMMITTED: frozenset(),
        HoldState.RELEASED: frozenset(),
        HoldState.EXPIRED: frozenset(),
    },
    already_done=frozenset(
        {
            (HoldState.COMMITTED, HoldState.COMMITTED),
            (HoldState.RELEASED, HoldState.RELEASED),
            (HoldState.EXPIRED, HoldState.EXPIRED),
            (HoldState.EXPIRED, HoldState.RELEASED),
        }
    ),
)
