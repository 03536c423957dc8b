"""Alerts for the shop's staff: a payment held for review, a dispute. Delivered through the
outbox (written in the transaction that found the problem); today they are logged at ERROR
(`event=alert`) for the log pipeline to page on; merchant webhooks deliver them too, later."""

from __future__ import annotations

import structlog

from kassa.outbox.service import Claimed

log = structlog.get_logger("kassa.alerts")


async def send_alert(message: Claimed) -> None:
    log.error("alert", **{k: v for k, v in message.payload.items() if k != "event"})
