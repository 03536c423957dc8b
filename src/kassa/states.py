"""State machines: one table of allowed transitions per machine, and the one way to consult it.

Every state (hold, checkout, payment, refund, order, order payment status) is a `StrEnum` in its
domain's `states.py`, with one `Machine` listing which moves are allowed. Code that changes a state
asks the machine first, so a forbidden move is a 409 `invalid_transition` naming `from` and `to`,
never a silent write; tests enumerate every pair of every machine against the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Generic, TypeVar

from kassa.errors import InvalidTransition

S = TypeVar("S", bound=StrEnum)


class Machine(Generic[S]):
    """`moves[a]` are the states `a` may become. `already_done` lists the (current, target)
    pairs that change nothing and are not an error (asking again for what already happened)."""

    def __init__(
        self,
        name: str,
        states: type[S],
        moves: Mapping[S, frozenset[S]],
        *,
        already_done: frozenset[tuple[S, S]] = frozenset(),
    ) -> None:
        missing = set(states) - set(moves)
        if missing:
            raise ValueError(f"{name}: no row for {sorted(missing)}")
        self.name = name
        self.states = states
        self.moves = dict(moves)
        self.already_done = already_done

    def allows(self, current: str, target: str) -> bool:
        return self.states(target) in self.moves[self.states(current)]

    def check(self, current: str, target: str) -> None:
        """Raise InvalidTransition unless `current` may become `target`."""
        if not self.allows(current, target):
            raise InvalidTransition(
                f"a {self.name} that is {current} cannot become {target}",
                from_state=str(current),
                to_state=str(target),
            )

    def plan(self, current: str, target: str) -> bool:
        """True: move to `target`; False: already done, change nothing; raises otherwise."""
        if (self.states(current), self.states(target)) in self.already_done:
            return False
        self.check(current, target)
        return True

    def pairs(self) -> Iterator[tuple[S, S]]:
        """Every allowed move."""
        for current, targets in self.moves.items():
            for target in sorted(targets):
                yield current, target


def one_of(column: str, states: type[StrEnum]) -> str:
    """A CHECK constraint's text: `column` holds one of the machine's states."""
    return f"{column} IN ({', '.join(repr(str(s.value)) for s in states)})"
