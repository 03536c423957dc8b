"""Who is acting: the signed-in caller as services see it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def owns(self, vendor_id: str | None) -> bool:
        """May this caller manage something owned by `vendor_id` (None: the shop itself)?"""
        return self.is_admin or (self.role == "vendor" and vendor_id == self.user_id)
