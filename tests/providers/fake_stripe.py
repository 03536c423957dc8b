"""A stand-in for Stripe's API: the endpoints Kassa's SDK calls (PaymentIntents create and
retrieve, refunds create), with the secret key checked and idempotency keys honoured, plus what a
test needs to play the buyer and Stripe's side: pay, decline, dispute, and events signed with
Stripe's scheme (`stripe.WebhookSignature`, the SDK's own)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from typing import Any
from urllib.parse import parse_qsl

import stripe
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SECRET_KEY = "sk_test_kassa_local"
PUBLISHABLE_KEY = "pk_test_kassa_local"
WEBHOOK_SECRETS = ("whsec_kassa_old_secret", "whsec_kassa_new_secret")


def form(body: bytes) -> dict[str, Any]:
    """Stripe's form encoding (`metadata[key]=value`, `a[b]=c`) back into nested dicts."""
    result: dict[str, Any] = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        parts = key.replace("]", "").split("[")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return result


def error(status: int, kind: str, message: str, code: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"type": kind, "message": message}}
    if code:
        body["error"]["code"] = code
    return JSONResponse(body, status_code=status)


class FakeStripe:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.reset()
        self.app = self._build()

    def reset(self) -> None:
        self.intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, Any] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, idempotency key
        self.delay = 0.0
        self.down = False
        self.refuse_refunds: str | None = None
        self.refund_status = "succeeded"

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Any:
            key = request.headers.get("idempotency-key")
            self.requests.append((request.method, request.url.path, key))
            if request.headers.get("authorization") != f"Bearer {SECRET_KEY}":
                return error(401, "invalid_request_error", "Invalid API Key provided")
            if self.down:
                return error(500, "api_error", "Something went wrong on Stripe's end")
            if key is not None and request.method == "POST":
                with self.lock:
                    if key in self.answers:
                        return JSONResponse(self.answers[key])
            response = await call_next(request)
            # Slow on the way back: the work is done even if the caller stops waiting.
            if self.delay:
                await asyncio.sleep(self.delay)
            return response

        @app.post("/v1/payment_intents")
        async def create_intent(request: Request) -> Any:
            params = form(await request.body())
            intent_id = f"pi_{next(self.ids):06d}"
            intent = {
                "id": intent_id,
                "object": "payment_intent",
                "amount": int(params["amount"]),
                "amount_received": 0,
                "currency": params["currency"],
                "status": "requires_payment_method",
                "client_secret": f"{intent_id}_secret_local",
                "metadata": params.get("metadata", {}),
                "last_payment_error": None,
                "livemode": False,
            }
            with self.lock:
                self.intents[intent_id] = intent
                self._remember(request, intent)
            return intent

        @app.get("/v1/payment_intents/{intent_id}")
        async def get_intent(intent_id: str) -> Any:
            intent = self.intents.get(intent_id)
            if intent is None:
                return error(
                    404, "invalid_request_error", "No such payment_intent", "resource_missing"
                )
            return intent

        @app.post("/v1/refunds")
        async def create_refund(request: Request) -> Any:
            params = form(await request.body())
            intent = self.intents.get(params.get("payment_intent", ""))
            if intent is None:
                return error(
                    404, "invalid_request_error", "No such payment_intent", "resource_missing"
                )
            if self.refuse_refunds:
                return error(400, "invalid_request_error", "Refund refused", self.refuse_refunds)
            refund_id = f"re_{next(self.ids):06d}"
            refund = {
                "id": refund_id,
                "object": "refund",
                "amount": int(params.get("amount") or intent["amount_received"]),
                "currency": intent["currency"],
                "payment_intent": intent["id"],
                "status": self.refund_status,
                "metadata": params.get("metadata", {}),
                "failure_reason": None,
            }
            with self.lock:
                self.refunds[refund_id] = refund
                self._remember(request, refund)
            return refund

        return app

    def _remember(self, request: Request, answer: dict[str, Any]) -> None:
        key = request.headers.get("idempotency-key")
        if key is not None:
            self.answers[key] = answer

    # --- the buyer's and Stripe's side -------------------------------------------------------

    def pay(
        self, intent_id: str, *, amount: int | None = None, currency: str | None = None
    ) -> dict:
        """The buyer pays in the Payment Element; returns Stripe's payment_intent.succeeded."""
        intent = self.intents[intent_id]
        intent["status"] = "succeeded"
        intent["amount_received"] = intent["amount"] if amount is None else amount
        if currency is not None:
            intent["currency"] = currency
        return self.event("payment_intent.succeeded", intent)

    def decline(self, intent_id: str, code: str = "card_declined") -> dict:
        intent = self.intents[intent_id]
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = {"code": "card_declined", "decline_code": code}
        return self.event("payment_intent.payment_failed", intent)

    def dispute(self, intent_id: str, reason: str = "fraudulent") -> dict:
        intent = self.intents[intent_id]
        dispute = {
            "id": f"dp_{next(self.ids):06d}",
            "object": "dispute",
            "payment_intent": intent_id,
            "amount": intent["amount_received"],
            "currency": intent["currency"],
            "reason": reason,
        }
        return self.event("charge.dispute.created", dispute)

    def event(self, kind: str, thing: dict[str, Any]) -> dict:
        return {
            "id": f"evt_{next(self.ids):06d}",
            "object": "event",
            "type": kind,
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": json.loads(json.dumps(thing))},
        }


def signed(
    event: dict, secret: str = WEBHOOK_SECRETS[1], *, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=at)
    return body.encode(), {"stripe-signature": header, "content-type": "application/json"}
