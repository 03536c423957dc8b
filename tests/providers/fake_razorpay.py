"""A stand-in for Razorpay's API: the endpoints Kassa's SDK calls (orders create, list by
receipt, their payments; payments fetch, capture, refund, their refunds), with the key id and
secret checked (HTTP Basic), plus what a test needs to play the buyer in Checkout.js and
Razorpay's side: pay (captured, authorized or failed), the checkout signature, and webhooks
signed the way Razorpay signs them (HMAC-SHA256 of the raw body with the webhook secret)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

KEY_ID = "rzp_test_kassa"
KEY_SECRET = "rzp_secret_kassa_local"
WEBHOOK_SECRETS = ("rzp_whsec_old", "rzp_whsec_new")


def error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "description": description}}, status_code=status)


def collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"entity": "collection", "count": len(items), "items": items}


def hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


class FakeRazorpay:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.reset()
        self.app = self._build()

    def reset(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.down = False
        self.refuse_refunds = False

    def _build(self) -> FastAPI:
        app = FastAPI()
        expected = "Basic " + base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Any:
            self.requests.append((request.method, request.url.path))
            if request.headers.get("authorization") != expected:
                return error(401, "BAD_REQUEST_ERROR", "Authentication failed")
            if self.down:
                return error(500, "SERVER_ERROR", "The server encountered an error")
            return await call_next(request)

        @app.get("/v1/orders")
        async def list_orders(receipt: str | None = None) -> Any:
            found = [o for o in self.orders.values() if receipt is None or o["receipt"] == receipt]
            return collection(found)

        @app.post("/v1/orders")
        async def create_order(request: Request) -> Any:
            body = await request.json()
            order_id = f"order_{next(self.ids):06d}"
            order = {
                "id": order_id,
                "entity": "order",
                "amount": int(body["amount"]),
                "amount_paid": 0,
                "currency": body["currency"],
                "receipt": body.get("receipt"),
                "notes": body.get("notes", {}),
                "status": "created",
            }
            with self.lock:
                self.orders[order_id] = order
            return order

        @app.get("/v1/orders/{order_id}/payments")
        async def order_payments(order_id: str) -> Any:
            if order_id not in self.orders:
                return error(400, "BAD_REQUEST_ERROR", "The id provided does not exist")
            found = [p for p in self.payments.values() if p["order_id"] == order_id]
            return collection(sorted(found, key=lambda p: p["created_at"], reverse=True))

        @app.get("/v1/payments/{payment_id}")
        async def get_payment(payment_id: str) -> Any:
            payment = self.payments.get(payment_id)
            if payment is None:
                return error(400, "BAD_REQUEST_ERROR", "The id provided does not exist")
            return payment

        @app.post("/v1/payments/{payment_id}/capture")
        async def capture(payment_id: str, request: Request) -> Any:
            payment = self.payments.get(payment_id)
            if payment is None:
                return error(400, "BAD_REQUEST_ERROR", "The id provided does not exist")
            if payment["status"] == "captured":
                return error(400, "BAD_REQUEST_ERROR", "This payment has already been captured")
            body = await request.json()
            if int(body["amount"]) != payment["amount"]:
                return error(400, "BAD_REQUEST_ERROR", "Capture amount must equal the amount")
            payment["status"] = "captured"
            payment["captured"] = True
            return payment

        @app.get("/v1/payments/{payment_id}/refunds")
        async def payment_refunds(payment_id: str) -> Any:
            return collection([r for r in self.refunds.values() if r["payment_id"] == payment_id])

        @app.post("/v1/payments/{payment_id}/refund")
        async def refund(payment_id: str, request: Request) -> Any:
            payment = self.payments.get(payment_id)
            if payment is None or payment["status"] not in ("captured", "refunded"):
                return error(400, "BAD_REQUEST_ERROR", "The payment has not been captured")
            if self.refuse_refunds:
                return error(400, "BAD_REQUEST_ERROR", "The refund amount exceeds the balance")
            body = await request.json()
            refund_id = f"rfnd_{next(self.ids):06d}"
            made = {
                "id": refund_id,
                "entity": "refund",
                "amount": int(body.get("amount") or payment["amount"]),
                "currency": payment["currency"],
                "payment_id": payment_id,
                "notes": body.get("notes", {}),
                "status": "processed",
            }
            with self.lock:
                self.refunds[refund_id] = made
            return made

        return app

    # --- the buyer's and Razorpay's side ----------------------------------------------------

    def pay(
        self, order_id: str, *, status: str = "captured", amount: int | None = None
    ) -> tuple[str, str]:
        """The buyer pays in Checkout.js; returns (razorpay_payment_id, razorpay_signature)."""
        order = self.orders[order_id]
        payment_id = f"pay_{next(self.ids):06d}"
        self.payments[payment_id] = {
            "id": payment_id,
            "entity": "payment",
            "amount": order["amount"] if amount is None else amount,
            "currency": order["currency"],
            "status": status,
            "order_id": order_id,
            "captured": status == "captured",
            "error_code": "BAD_REQUEST_ERROR" if status == "failed" else None,
            "error_reason": "payment_failed" if status == "failed" else None,
            "notes": {},
            "created_at": time.time_ns(),
        }
        if status == "captured":
            order["status"] = "paid"
        return payment_id, hmac_hex(KEY_SECRET, f"{order_id}|{payment_id}")

    def event(self, kind: str, payment_id: str | None = None, refund_id: str | None = None) -> dict:
        contains: dict[str, Any] = {}
        if payment_id is not None:
            payment = self.payments[payment_id]
            contains["payment"] = {"entity": dict(payment)}
            if kind == "order.paid":
                contains["order"] = {"entity": dict(self.orders[payment["order_id"]])}
        if refund_id is not None:
            contains["refund"] = {"entity": dict(self.refunds[refund_id])}
        return {
            "entity": "event",
            "account_id": "acc_kassa",
            "event": kind,
            "contains": sorted(contains),
            "payload": contains,
            "created_at": int(time.time()),
        }


def signed(
    event: dict, secret: str = WEBHOOK_SECRETS[1], *, event_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event)
    return body.encode(), {
        "x-razorpay-signature": hmac_hex(secret, body),
        "x-razorpay-event-id": event_id or f"evt_rzp_{time.time_ns()}",
        "content-type": "application/json",
    }
