"""Helpers of the HTTP torture tests: real `kassa serve` processes on a PostgreSQL database of
their own, buyers that go through the buying flow over HTTP, and a read-back of the tables that
says whether money, stock and the ledger agree."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from kassa import migrate
from kassa.checkout.models import Checkout
from kassa.db import Database
from kassa.inventory.holds import hold_lines, holds
from kassa.inventory.ledger import movements
from kassa.inventory.service import stock
from kassa.orders.models import Order
from kassa.outbox.models import OutboxMessage
from kassa.payments.models import Payment, Refund
from tests.checkout.flow import ADDRESS, GOOD_CARD
from tests.conftest import POSTGRES_URL, SECRET, _admin_execute, _unreachable
from tests.test_config_and_cli import kassa_env

ADMIN_EMAIL = "torture-admin@example.com"
ADMIN_PASSWORD = "torture-admin-password"
PAID = ("succeeded", "partially_refunded", "refunded")


# --- a database of the test's own --------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_postgres(prefix: str) -> AsyncIterator[str]:
    """A new, migrated PostgreSQL database `kassa_<prefix>_<pid>`, dropped at the end. Skips
    without KASSA_TEST_POSTGRES_URL (CI=true has already refused to run without it)."""
    if not POSTGRES_URL:
        pytest.skip("KASSA_TEST_POSTGRES_URL is not set")
    name = f"kassa_{prefix}_{os.getpid()}"
    try:
        await _admin_execute(
            POSTGRES_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"
        )
    except Exception as error:
        _unreachable("PostgreSQL", error)
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        await migrate.upgrade_async(url)
        yield url
    finally:
        await _admin_execute(POSTGRES_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.asynccontextmanager
async def fresh_database(backend: str, prefix: str, workdir: Path) -> AsyncIterator[str]:
    """A new, migrated database on `backend`: a SQLite file in `workdir`, or a PostgreSQL
    database as `fresh_postgres` makes it."""
    if backend == "postgres":
        async with fresh_postgres(prefix) as url:
            yield url
        return
    url = f"sqlite+aiosqlite:///{workdir / f'{prefix}.db'}"
    await migrate.upgrade_async(url)
    yield url


# --- `kassa serve` processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(workdir: Path, database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a `kassa serve` on `database_url`: no KASSA_ setting of this process,
    a long secret, the first admin, and `settings` (lower-case names without the prefix)."""
    return kassa_env(
        workdir,
        database_url=database_url,
        secret_key=SECRET,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        log_level="warning",
        **settings,
    )


@dataclass
class Server:
    """One `kassa serve` subprocess on 127.0.0.1 (its output goes to a log file in `workdir`)."""

    name: str
    workdir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    log_paths: list[Path] = field(default_factory=list)

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "kassa",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log_path = self.workdir / f"{self.name}-{self.starts}.log"
        self.log_paths.append(log_path)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, within: float = 40) -> float:
        """Poll GET /readyz until it answers 200; returns the seconds it took."""
        assert self.process is not None
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while time.monotonic() - started < within:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return time.monotonic() - started
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {within} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lifespan end, connections simply drop."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        text = "".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}"
            for path in self.log_paths
            if path.exists()
        )
        return text[-chars:]

    def log_problems(self) -> list[str]:
        """Lines of the logs that show an unhandled error or an error-level event."""
        return [
            line
            for line in self.log_tail(chars=10**7).splitlines()
            if "Traceback" in line or "Exception in ASGI" in line or "[error" in line
        ]


# --- over HTTP ---------------------------------------------------------------------------------

# Made once: building one per client would cost more than the whole sale.
_TLS = ssl.create_default_context()


def client(base_url: str, timeout: float = 60) -> httpx.AsyncClient:
    """A client of its own for one buyer. With one client (one connection pool) for 120 buyers,
    the pool sent their requests a few at a time (about 40 a second on two cores), so most of a
    "burst" had not even reached the server when it was killed."""
    return httpx.AsyncClient(base_url=base_url, timeout=timeout, verify=_TLS)


async def admin_headers(http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.post(
        "/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def open_shop(http: httpx.AsyncClient, admin: dict[str, str], sku: str, units: int) -> None:
    """A US shipping rate and one product whose variant `sku` has `units` on hand."""
    response = await http.put(
        "/v1/admin/shipping-rates/us",
        json={"amount": 500, "free_above_amount": 10_000},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    body = {
        "name": f"Torture {sku}",
        "slug": f"torture-{sku.lower()}",
        "variants": [
            {"sku": sku, "name": sku, "price_amount": 2500, "on_hand": units}
            | {"low_stock_threshold": 0}
        ],
    }
    response = await http.post("/v1/products", json=body, headers=admin)
    assert response.status_code == 201, response.text


def code_of(response: httpx.Response) -> str:
    """`201`, or `409 insufficient_stock`: the status and the problem's code, if any."""
    code = None
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        code = response.json().get("code")
    return f"{response.status_code} {code}" if code else str(response.status_code)


@dataclass
class Buyer:
    """One buyer (with an HTTP client of its own): an anonymous cart on one server, then a
    checkout and maybe a payment."""

    n: int
    http: httpx.AsyncClient
    server: str
    cart_id: str | None = None
    token: str | None = None
    checkout_id: str | None = None
    payment_id: str | None = None
    checkout_answer: str | None = None
    pay_answer: str | None = None
    story: list[str] = field(default_factory=list)  # every answer (and failure), in order

    @property
    def access(self) -> dict[str, str]:
        assert self.token is not None
        return {"X-Cart-Token": self.token}

    async def fill_cart(self, sku: str) -> str:
        response = await self.http.post("/v1/carts")
        if response.status_code != 201:
            return f"cart {code_of(response)}"
        cart = response.json()
        self.cart_id, self.token = cart["id"], cart["token"]
        response = await self.http.post(
            f"/v1/carts/{self.cart_id}/items",
            json={"sku": sku, "quantity": 1},
            headers=self.access,
        )
        return "ok" if response.status_code == 200 else f"add {code_of(response)}"

    async def check_out(self) -> httpx.Response:
        body = {"cart_id": self.cart_id, "email": f"buyer{self.n}@example.com"}
        response = await self.http.post(
            "/v1/checkouts", json=body | {"shipping_address": ADDRESS}, headers=self.access
        )
        self.checkout_answer = code_of(response)
        self.story.append(f"checkout {self.checkout_answer}")
        if response.status_code == 201:
            checkout = response.json()
            self.checkout_id, self.payment_id = checkout["id"], checkout["payment"]["id"]
        return response

    async def pay(self, card: str = GOOD_CARD) -> httpx.Response:
        response = await self.http.post(
            f"/v1/sandbox/payments/{self.payment_id}/pay",
            json={"card_number": card},
            headers=self.access,
        )
        self.pay_answer = code_of(response)
        self.story.append(f"pay {self.pay_answer}")
        return response

    async def payment_status(self) -> str:
        response = await self.http.get(f"/v1/payments/{self.payment_id}", headers=self.access)
        assert response.status_code == 200, response.text
        return str(response.json()["status"])


async def wait_for_payments(
    buyers: list[Buyer], *, until: tuple[str, ...], within: float
) -> dict[str, str]:
    """Poll every buyer's payment until its status is one of `until`; returns the last statuses
    (the test asserts on them, so a deadline shows what was still missing)."""
    deadline = time.monotonic() + within
    statuses: dict[str, str] = {}
    waiting = list(buyers)
    while waiting and time.monotonic() < deadline:
        seen = await asyncio.gather(*(buyer.payment_status() for buyer in waiting))
        for buyer, status in zip(waiting, seen, strict=True):
            assert buyer.payment_id is not None
            statuses[buyer.payment_id] = status
        waiting = [b for b, s in zip(waiting, seen, strict=True) if s not in until]
        if waiting:
            await asyncio.sleep(0.25)
    return statuses


async def deadlocks(db: Database) -> int:
    """PostgreSQL's count of deadlocks in this database (retried ones included: a backend
    reports its counts when it ends, so stop the servers before the last look)."""
    async with db.read() as session:
        count = await session.scalar(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        )
    return int(count or 0)


# --- reading the tables back -------------------------------------------------------------------


@dataclass
class Books:
    """Everything the promises are about, read in one transaction."""

    levels: dict[str, tuple[int, int]]
    holds: dict[str, dict[str, Any]]  # id -> state, reference, lines [(sku, qty)]
    movements: list[dict[str, Any]]
    checkouts: dict[str, dict[str, Any]]  # id -> state, hold_id, payment_id, outcome_reason
    orders: dict[str, dict[str, Any]]  # id -> checkout_id, payment_id, status
    payments: dict[str, dict[str, Any]]  # id -> checkout_id, status, amount, refunded_amount
    refunds: dict[str, int] = field(default_factory=dict)  # payment id -> sum of refunds
    outbox: Counter[str] = field(default_factory=Counter)  # state -> messages

    def units_held(self, sku: str, state: str = "active") -> int:
        return sum(
            quantity
            for hold in self.holds.values()
            if hold["state"] == state
            for line_sku, quantity in hold["lines"]
            if line_sku == sku
        )

    def commits(self) -> dict[str, int]:
        """Units that left on_hand by commit, per hold."""
        total: dict[str, int] = defaultdict(int)
        for row in self.movements:
            if row["kind"] == "commit":
                total[row["reference_id"]] -= int(row["on_hand_delta"])
        return dict(total)

    def replayed(self) -> dict[str, tuple[int, int]]:
        total: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for row in self.movements:
            total[row["sku"]][0] += int(row["on_hand_delta"])
            total[row["sku"]][1] += int(row["reserved_delta"])
        return {sku: (on_hand, reserved) for sku, (on_hand, reserved) in total.items()}

    def ledger_violations(self) -> list[str]:
        """Every moment the ledger went through (its rows in id order: one SKU's rows are written
        under that SKU's row lock, so id order is the order the changes happened in) must keep
        0 <= reserved <= on_hand."""
        running: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        bad = []
        for row in self.movements:
            level = running[row["sku"]]
            level[0] += int(row["on_hand_delta"])
            level[1] += int(row["reserved_delta"])
            if not 0 <= level[1] <= level[0]:
                bad.append(f"after movement {row['id']} ({row['kind']}): {tuple(level)}")
        return bad


async def read_books(db: Database) -> Books:
    async with db.read() as session:
        levels = {
            sku: (int(on_hand), int(reserved))
            for sku, on_hand, reserved in await session.execute(
                select(stock.c.sku, stock.c.on_hand, stock.c.reserved)
            )
        }
        hold_rows: dict[str, dict[str, Any]] = {
            hold_id: {"state": state, "reference": reference, "lines": []}
            for hold_id, state, reference in await session.execute(
                select(holds.c.id, holds.c.state, holds.c.reference)
            )
        }
        for hold_id, sku, quantity in await session.execute(
            select(hold_lines.c.hold_id, hold_lines.c.sku, hold_lines.c.quantity)
        ):
            hold_rows[hold_id]["lines"].append((sku, int(quantity)))
        movement_rows = [
            dict(row._mapping)
            for row in await session.execute(select(movements).order_by(movements.c.id))
        ]
        checkouts = {
            row.id: dict(row._mapping)
            for row in await session.execute(
                select(
                    Checkout.id,
                    Checkout.state,
                    Checkout.hold_id,
                    Checkout.payment_id,
                    Checkout.outcome_reason,
                )
            )
        }
        orders = {
            row.id: dict(row._mapping)
            for row in await session.execute(
                select(Order.id, Order.checkout_id, Order.payment_id, Order.status)
            )
        }
        payments = {
            row.id: dict(row._mapping)
            for row in await session.execute(
                select(
                    Payment.id,
                    Payment.checkout_id,
                    Payment.status,
                    Payment.amount,
                    Payment.refunded_amount,
                )
            )
        }
        refunds: dict[str, int] = defaultdict(int)
        for payment_id, amount in await session.execute(select(Refund.payment_id, Refund.amount)):
            refunds[payment_id] += int(amount)
        outbox = Counter(state for (state,) in await session.execute(select(OutboxMessage.state)))
    return Books(
        levels, hold_rows, movement_rows, checkouts, orders, payments, dict(refunds), outbox
    )


def broken_promises(books: Books, sku: str, units: int) -> list[str]:
    """What the books say against the promises, for a shop that sold one SKU (`units` to start
    with) through checkouts only. Empty when money, stock and the ledger agree."""
    bad: list[str] = []
    on_hand, reserved = books.levels[sku]
    if not 0 <= reserved <= on_hand:
        bad.append(f"{sku}: on_hand {on_hand}, reserved {reserved}")
    if reserved != books.units_held(sku):
        bad.append(f"{sku}: reserved {reserved} but active holds hold {books.units_held(sku)}")
    if books.replayed() != books.levels:
        bad.append(f"the ledger replays to {books.replayed()}, the levels are {books.levels}")
    bad += books.ledger_violations()

    commits = books.commits()
    order_holds = {books.checkouts[o["checkout_id"]]["hold_id"] for o in books.orders.values()}
    for order_id, order in books.orders.items():
        hold_id = books.checkouts[order["checkout_id"]]["hold_id"]
        if books.holds[hold_id]["state"] != "committed" or hold_id not in commits:
            bad.append(f"order {order_id}: its hold {hold_id} is not committed in the ledger")
        payment = books.payments[order["payment_id"]]
        if payment["status"] not in PAID:
            bad.append(f"order {order_id}: its payment is {payment['status']}")
    for hold_id in set(commits) - order_holds:
        bad.append(f"hold {hold_id} was committed without an order")
    sold = sum(commits.get(hold_id, 0) for hold_id in order_holds)
    if on_hand + sold != units:
        bad.append(f"{sku}: on_hand {on_hand} + {sold} sold by orders != {units}")

    by_checkout = {order["checkout_id"]: order_id for order_id, order in books.orders.items()}
    for payment_id, payment in books.payments.items():
        if payment["status"] not in PAID or payment["checkout_id"] in by_checkout:
            continue
        refunded = books.refunds.get(payment_id, 0)
        if refunded < payment["amount"] or payment["refunded_amount"] < payment["amount"]:
            bad.append(
                f"payment {payment_id} is {payment['status']} without an order, "
                f"refunded {refunded} of {payment['amount']}"
            )

    for hold_id, hold in books.holds.items():
        checkout = books.checkouts.get(hold["reference"] or "")
        if checkout is None:
            bad.append(f"hold {hold_id} ({hold['state']}) belongs to no checkout")
        elif hold["state"] == "active" and checkout["state"] != "open":
            bad.append(f"hold {hold_id} is active but its checkout is {checkout['state']}")
    return bad
