"""Hold throughput benchmark: Kassa's `hold_stock` against the same SQL hand-written on asyncpg.

Run with `make bench` (or `.venv/bin/python bench/holds.py --help` for the options). It drops and
recreates its own PostgreSQL database, seeds stock, then for each scenario ("hot": every hold takes
the same SKU; "spread": each hold takes a random one of many SKUs) and each concurrency level runs
the raw asyncpg baseline and Kassa for the same time, checks that `reserved` matches the holds
made, prints one table and writes every figure to bench/results/holds.json. `--profile` instead
runs both at concurrency 1 under cProfile, to show where Kassa's extra time per hold goes.
See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import itertools
import json
import math
import os
import platform
import pstats
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import sqlalchemy
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import URL, make_url

from kassa import migrate
from kassa.db import Database
from kassa.ids import new_id
from kassa.inventory.holds import hold_stock

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/kassa_bench"
URL_ENV = "KASSA_BENCH_DATABASE_URL"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# The database the script drops is its own; these it must never drop (the test suite uses `test`).
MAINTENANCE_DATABASES = ("postgres", "test")
NEVER_DROP = frozenset({*MAINTENANCE_DATABASES, "template0", "template1"})

STOCK = 10**9
HOT_SKU = "BENCH-HOT"
TTL_SECONDS = 900
PROFILE_TOP = 25

# What `kassa.inventory.holds` sends to PostgreSQL for a one-line hold: one statement in which the
# conditional UPDATE decides and the three inserts follow only for the row it returns
# (`_HOLD_ONE_LINE_PG`), inside BEGIN ... COMMIT. The baseline runs the same SQL.
HOLD_ONE_LINE = """
WITH overdue AS (
    SELECT 1 FROM hold_lines
    WHERE $7::boolean AND sku = $1::varchar AND active_until <= $6::timestamptz
    LIMIT 1
), taken AS (
    UPDATE stock_levels SET reserved = reserved + $2::bigint
    WHERE sku = $1::varchar AND on_hand - reserved >= $2::bigint
      AND NOT EXISTS (SELECT 1 FROM overdue)
    RETURNING sku
), hold AS (
    INSERT INTO holds (id, state, expires_at, reference, created_at)
    SELECT $3::varchar, 'active', $4::timestamptz, $5::varchar, $6::timestamptz FROM taken
), line AS (
    INSERT INTO hold_lines (hold_id, sku, quantity, active_until)
    SELECT $3::varchar, sku, $2::bigint, $4::timestamptz FROM taken
), entry AS (
    INSERT INTO stock_movements
        (sku, kind, on_hand_delta, reserved_delta, reference_type, reference_id, created_at)
    SELECT sku, 'hold', 0, $2::bigint, 'hold', $3::varchar, $6::timestamptz FROM taken
)
SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM overdue)
"""

# `--raw-statements`: the same work as four separate statements (four round trips), the way a
# hand-written checkout usually does it, and the way Kassa does it for multi-line holds.
TAKE = (
    "UPDATE stock_levels SET reserved = reserved + $2 WHERE sku = $1 AND on_hand - reserved >= $2"
)
INSERT_HOLD = (
    "INSERT INTO holds (id, state, expires_at, reference, created_at) VALUES ($1, $2, $3, $4, $5)"
)
INSERT_LINE = (
    "INSERT INTO hold_lines (hold_id, sku, quantity, active_until) VALUES ($1, $2, $3, $4)"
)
INSERT_MOVEMENT = (
    "INSERT INTO stock_movements (sku, kind, on_hand_delta, reserved_delta, reference_type, "
    "reference_id, reason, actor_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)

T = TypeVar("T")
HoldFn = Callable[[str], Awaitable[None]]
Hook = Callable[[], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    skus: tuple[str, ...]

    def picker(self, rng: random.Random) -> Callable[[], str]:
        skus = self.skus
        if len(skus) == 1:
            only = skus[0]
            return lambda: only
        return lambda: rng.choice(skus)


@dataclass
class Tally:
    """What the holders of one run did; shared by all of them (one thread, so no locking)."""

    latencies: list[float] = field(default_factory=list)
    held: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    first_error: str | None = None
    cpu_seconds: float = 0.0


@dataclass
class RunResult:
    scenario: str
    implementation: str
    concurrency: int
    seconds: float
    tally: Tally
    repeat: int = 1
    problems: list[str] = field(default_factory=list)
    # 1/5/15-minute load averages as the run started: other work on the machine shows up here.
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def holds(self) -> int:
        return len(self.tally.latencies)

    @property
    def holds_per_s(self) -> float:
        return self.holds / self.seconds

    def percentile_ms(self, q: float) -> float | None:
        return percentile(self.tally.latencies, q)

    @property
    def cpu_us_per_hold(self) -> float | None:
        return self.tally.cpu_seconds / self.holds * 1e6 if self.holds else None

    def as_json(self) -> dict[str, Any]:
        latencies = self.tally.latencies
        return {
            "scenario": self.scenario,
            "implementation": self.implementation,
            "concurrency": self.concurrency,
            "repeat": self.repeat,
            "seconds": self.seconds,
            "holds": self.holds,
            "holds_per_s": round(self.holds_per_s, 1),
            "p50_ms": _round(self.percentile_ms(0.50)),
            "p90_ms": _round(self.percentile_ms(0.90)),
            "p99_ms": _round(self.percentile_ms(0.99)),
            "mean_ms": _round(sum(latencies) / len(latencies) * 1e3 if latencies else None),
            "max_ms": _round(max(latencies) * 1e3 if latencies else None),
            "client_cpu_us_per_hold": _round(self.cpu_us_per_hold),
            "holds_since_reset": sum(self.tally.held.values()),
            "skus_touched": len(self.tally.held),
            "errors": self.tally.errors,
            "first_error": self.tally.first_error,
            "verified": not self.problems,
            "problems": self.problems,
            "load_average_at_start": [round(x, 2) for x in self.load_average],
        }


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1e3


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- the database -------------------------------------------------------------------------------


def bench_url(raw: str) -> URL:
    url = make_url(raw)
    if url.get_backend_name() != "postgresql":
        raise SystemExit(f"holds.py measures PostgreSQL; got {url.get_backend_name()!r}")
    if url.get_driver_name() != "asyncpg":
        url = url.set(drivername="postgresql+asyncpg")
    if not url.database or url.database in NEVER_DROP:
        raise SystemExit(
            f"refusing to drop and recreate database {url.database!r}: name a database of its own"
        )
    return url


def asyncpg_dsn(url: URL, database: str | None = None) -> str:
    plain = url.set(drivername="postgresql")
    if database is not None:
        plain = plain.set(database=database)
    return plain.render_as_string(hide_password=False)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def recreate_database(url: URL) -> None:
    admin = None
    for name in MAINTENANCE_DATABASES:
        try:
            admin = await asyncpg.connect(asyncpg_dsn(url, name), timeout=10)
            break
        except asyncpg.InvalidCatalogNameError:
            continue
    if admin is None:
        raise SystemExit(f"no maintenance database ({', '.join(MAINTENANCE_DATABASES)}) to use")
    try:
        target = quote_ident(url.database or "")
        # A run killed half-way may leave connections behind; FORCE ends them (PostgreSQL 13+).
        force = " WITH (FORCE)" if admin.get_server_version().major >= 13 else ""
        await admin.execute(f"DROP DATABASE IF EXISTS {target}{force}")
        await admin.execute(f"CREATE DATABASE {target}")
    finally:
        await admin.close()


async def seed(conn: asyncpg.Connection, spread_skus: int) -> tuple[Scenario, Scenario]:
    """One product per scenario, one variant and stock row per SKU, loaded with COPY."""
    now = datetime.now(UTC)
    hot = Scenario("hot", (HOT_SKU,))
    spread = Scenario("spread", tuple(f"BENCH-{i:05d}" for i in range(spread_skus)))
    products, variants, levels = [], [], []
    for scenario in (hot, spread):
        product_id = new_id("prod")
        slug = f"bench-{scenario.name}"
        products.append((product_id, slug, slug, "", None, True, now, now))
        for sku in scenario.skus:
            variant_id = new_id("var")
            variants.append((variant_id, product_id, sku, sku, 100, "usd", True, now, now))
            levels.append((variant_id, sku, STOCK, 0, 0))
    async with conn.transaction():
        await conn.copy_records_to_table(
            "products",
            records=products,
            columns=[
                "id",
                "slug",
                "name",
                "description",
                "vendor_id",
                "is_active",
                "created_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "variants",
            records=variants,
            columns=[
                "id",
                "product_id",
                "sku",
                "name",
                "price_amount",
                "currency",
                "is_active",
                "created_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "stock_levels",
            records=levels,
            columns=["variant_id", "sku", "on_hand", "reserved", "low_stock_threshold"],
        )
    return hot, spread


async def reset(conn: asyncpg.Connection) -> None:
    """Every run starts from the same state: no holds, nothing reserved, no dead rows."""
    # TRUNCATE, unlike DELETE, does not fire the ledger's append-only row trigger.
    await conn.execute("TRUNCATE holds, hold_lines, stock_movements RESTART IDENTITY")
    await conn.execute("UPDATE stock_levels SET reserved = 0 WHERE reserved <> 0")
    # The hot row was updated ~10^5 times by the previous run; vacuum so the next one does not
    # walk its dead versions, and checkpoint so no checkpoint lands in the middle of a run.
    await conn.execute("VACUUM (ANALYZE) stock_levels, holds, hold_lines, stock_movements")
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")


async def verify(conn: asyncpg.Connection, tally: Tally) -> list[str]:
    """Problems found: `reserved` per SKU and the row counts must match the holds that succeeded."""
    problems = []
    rows = await conn.fetch("SELECT sku, reserved FROM stock_levels WHERE reserved <> 0")
    actual = {row["sku"]: int(row["reserved"]) for row in rows}
    wrong = [
        (sku, actual.get(sku, 0), tally.held.get(sku, 0))
        for sku in sorted(actual.keys() | tally.held.keys())
        if actual.get(sku, 0) != tally.held.get(sku, 0)
    ]
    for sku, reserved, held in wrong[:5]:
        problems.append(f"{sku}: reserved {reserved}, but {held} successful holds")
    if len(wrong) > 5:
        problems.append(f"... and {len(wrong) - 5} more SKUs")
    total = sum(tally.held.values())
    for table in ("holds", "hold_lines", "stock_movements"):
        count = await conn.fetchval(f"SELECT count(*) FROM {table}")
        if count != total:
            problems.append(f"{table} has {count} rows, but {total} successful holds")
    return problems


# --- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    warm_until: float
    stop_at: float


async def _holder(hold: HoldFn, pick: Callable[[], str], window: Window, tally: Tally) -> None:
    perf = time.perf_counter
    while True:
        sku = pick()
        start = perf()
        if start >= window.stop_at:
            return
        try:
            await hold(sku)
        except Exception as error:
            tally.errors += 1
            if tally.first_error is None:
                tally.first_error = f"{type(error).__name__}: {error}"
            continue
        end = perf()
        tally.held[sku] += 1
        # Counted by completion time: completions per second inside the window is the rate,
        # whichever holds happened to be in flight at its edges.
        if window.warm_until <= end <= window.stop_at:
            tally.latencies.append(end - start)


async def measure(
    hold: HoldFn,
    scenario: Scenario,
    concurrency: int,
    *,
    warmup: float,
    seconds: float,
    seed: int,
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
) -> Tally:
    tally = Tally()
    now = time.perf_counter()
    window = Window(now + warmup, now + warmup + seconds)

    async def timer() -> None:
        await asyncio.sleep(window.warm_until - time.perf_counter())
        cpu = time.process_time()
        if on_start:
            on_start()
        await asyncio.sleep(window.stop_at - time.perf_counter())
        if on_stop:
            on_stop()
        tally.cpu_seconds = time.process_time() - cpu

    # Worker i picks the same SKU sequence in every implementation.
    pickers = [scenario.picker(random.Random(seed * 100_003 + i)) for i in range(concurrency)]
    await asyncio.gather(timer(), *(_holder(hold, pick, window, tally) for pick in pickers))
    return tally


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """The hold leaves no session state behind, and SQLAlchemy's pool sends nothing on check-in
    either; asyncpg's default reset would cost the baseline one extra round trip per hold."""


async def run_raw(
    url: URL, scenario: Scenario, concurrency: int, args: argparse.Namespace, **hooks: Hook
) -> Tally:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(url), min_size=concurrency, max_size=concurrency, reset=_no_reset
    )
    ttl = timedelta(seconds=TTL_SECONDS)

    async def hold(sku: str) -> None:
        now = datetime.now(UTC)
        hold_id = new_id("hold")
        async with pool.acquire() as conn, conn.transaction():
            if not args.raw_statements:
                expires = now + ttl
                row = await conn.fetchrow(HOLD_ONE_LINE, sku, 1, hold_id, expires, None, now, True)
                if row is None or row[0] != 1:
                    raise RuntimeError(f"not enough stock for {sku}")
                return
            if await conn.execute(TAKE, sku, 1) != "UPDATE 1":
                raise RuntimeError(f"not enough stock for {sku}")
            await conn.execute(INSERT_HOLD, hold_id, "active", now + ttl, None, now)
            await conn.execute(INSERT_LINE, hold_id, sku, 1, now + ttl)
            await conn.execute(INSERT_MOVEMENT, sku, "hold", 0, 1, "hold", hold_id, None, None, now)

    try:
        return await measure(
            hold,
            scenario,
            concurrency,
            warmup=args.warmup,
            seconds=args.seconds,
            seed=args.seed,
            **hooks,
        )
    finally:
        await pool.close()


async def run_kassa(
    url: URL, scenario: Scenario, concurrency: int, args: argparse.Namespace, **hooks: Hook
) -> Tally:
    db = Database(url.render_as_string(hide_password=False), pool_size=concurrency)

    async def hold(sku: str) -> None:
        await db.run(lambda s: hold_stock(s, [(sku, 1)], ttl_seconds=TTL_SECONDS))

    try:
        # Open every connection up front, as asyncpg's pool does with min_size, so connection
        # set-up does not eat into the warm-up.
        connections = [db.engine.connect() for _ in range(concurrency)]
        await asyncio.gather(*(c.start() for c in connections))
        await asyncio.gather(*(c.close() for c in connections))
        return await measure(
            hold,
            scenario,
            concurrency,
            warmup=args.warmup,
            seconds=args.seconds,
            seed=args.seed,
            **hooks,
        )
    finally:
        await db.dispose()


RUNNERS = {"raw": run_raw, "kassa": run_kassa}


# --- the two modes ------------------------------------------------------------------------------


@dataclass
class Setup:
    url: URL
    admin: asyncpg.Connection
    scenarios: dict[str, Scenario]
    postgres: dict[str, str]


async def set_up(url: URL, spread_skus: int, console: Console) -> Setup:
    started = time.perf_counter()
    await recreate_database(url)
    await asyncio.to_thread(migrate.upgrade, url.render_as_string(hide_password=False))
    admin = await asyncpg.connect(asyncpg_dsn(url))
    seeded = time.perf_counter()
    hot, spread = await seed(admin, spread_skus)
    done = time.perf_counter()
    settings = await admin.fetch(
        "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
        ["fsync", "synchronous_commit", "shared_buffers", "max_connections", "wal_level"],
    )
    postgres = {row["name"]: row["setting"] for row in settings}
    postgres["version"] = await admin.fetchval("SELECT version()")
    postgres["server_version"] = await admin.fetchval("SHOW server_version")
    console.print(
        f"[dim]database {url.database} recreated and migrated in {seeded - started:.1f} s; "
        f"{1 + spread_skus} SKUs seeded in {done - seeded:.2f} s[/]"
    )
    return Setup(url, admin, {"hot": hot, "spread": spread}, postgres)


async def benchmark(args: argparse.Namespace, console: Console) -> tuple[list[RunResult], Setup]:
    setup = await set_up(args.url, args.skus, console)
    results = []
    try:
        for scenario_name in args.scenarios:
            scenario = setup.scenarios[scenario_name]
            for concurrency in args.concurrency:
                # Repeats alternate the implementations, so a burst of outside load hits both.
                for repeat, implementation in itertools.product(
                    range(1, args.repeat + 1), args.implementations
                ):
                    await reset(setup.admin)
                    load = os.getloadavg()
                    tally = await RUNNERS[implementation](setup.url, scenario, concurrency, args)
                    result = RunResult(
                        scenario_name, implementation, concurrency, args.seconds, tally, repeat
                    )
                    result.load_average = load
                    result.problems = await verify(setup.admin, tally)
                    results.append(result)
                    report_progress(console, result)
    finally:
        await setup.admin.close()
    return results, setup


def report_progress(console: Console, result: RunResult) -> None:
    p50, p99 = result.percentile_ms(0.5), result.percentile_ms(0.99)
    console.print(
        f"  {result.scenario:<6} {result.concurrency:>3} holders  {result.implementation:<5} "
        f"{result.holds_per_s:>8.0f} holds/s  p50 {_ms(p50)} ms  p99 {_ms(p99)} ms"
    )
    if result.tally.errors:
        console.print(
            f"  [yellow]{result.tally.errors} holds failed; first: {result.tally.first_error}[/]"
        )
    for problem in result.problems:
        console.print(
            f"  [bold red]MISMATCH after {result.implementation} {result.scenario} "
            f"x{result.concurrency}: {problem}[/]"
        )


@dataclass
class Profiled:
    implementation: str
    stats: pstats.Stats
    holds: int
    seconds: float
    # The same run without the profiler, which inflates Python-heavy code the most.
    plain_holds_per_s: float
    plain_cpu_us_per_hold: float | None


async def profile(args: argparse.Namespace, console: Console) -> tuple[list[Profiled], Setup]:
    """Kassa and, for contrast, the baseline on the hot SKU with one holder: once as they are,
    once under cProfile."""
    setup = await set_up(args.url, args.skus, console)
    hot = setup.scenarios["hot"]
    run_args = argparse.Namespace(**{**vars(args), "seconds": args.profile_seconds})
    out = []
    try:
        for implementation in ("kassa", "raw"):
            await reset(setup.admin)
            plain = await RUNNERS[implementation](setup.url, hot, 1, run_args)
            plain_result = RunResult("hot", implementation, 1, args.profile_seconds, plain)
            await reset(setup.admin)
            profiler = cProfile.Profile()
            tally = await RUNNERS[implementation](
                setup.url, hot, 1, run_args, on_start=profiler.enable, on_stop=profiler.disable
            )
            for problem in await verify(setup.admin, tally):
                console.print(f"[bold red]MISMATCH after {implementation}: {problem}[/]")
            out.append(
                Profiled(
                    implementation,
                    pstats.Stats(profiler),
                    len(tally.latencies),
                    args.profile_seconds,
                    plain_result.holds_per_s,
                    plain_result.cpu_us_per_hold,
                )
            )
    finally:
        await setup.admin.close()
    return out, setup


# --- reporting ----------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def medians(results: list[RunResult]) -> dict[tuple[str, int, str], RunResult]:
    """Per (scenario, holders, implementation), the run with the median holds/s."""
    groups: dict[tuple[str, int, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.scenario, result.concurrency, result.implementation), []).append(
            result
        )
    return {
        key: sorted(runs, key=lambda r: r.holds_per_s)[(len(runs) - 1) // 2]
        for key, runs in groups.items()
    }


def results_table(results: list[RunResult], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Holds: raw asyncpg vs Kassa ({args.seconds:g} s per run, PostgreSQL"
        + (f", median of {args.repeat} runs)" if args.repeat > 1 else ")"),
        box=box.SIMPLE_HEAVY,
        caption="holds completed in the measured window; p50/p99 latency per hold; CPU = this "
        "process's CPU time per hold; ! = failed holds or failed verification",
    )
    table.add_column("scenario")
    table.add_column("holders", justify="right")
    for name, style in (("raw", "cyan"), ("Kassa", "magenta")):
        for header in ("holds", "holds/s", "p50 ms", "p99 ms", "CPU µs"):
            table.add_column(f"{name}\n{header}", justify="right", style=style)
    table.add_column("Kassa/raw\nholds/s", justify="right", style="bold")
    by_key = medians(results)
    for scenario in args.scenarios:
        for concurrency in args.concurrency:
            cells = [scenario, str(concurrency)]
            pair = [by_key.get((scenario, concurrency, impl)) for impl in ("raw", "kassa")]
            for result in pair:
                if result is None:
                    cells += ["-"] * 5
                    continue
                flag = " !" if result.problems or result.tally.errors else ""
                cells += [
                    f"{result.holds:,}",
                    f"{result.holds_per_s:,.0f}{flag}",
                    _ms(result.percentile_ms(0.5)),
                    _ms(result.percentile_ms(0.99)),
                    _us(result.cpu_us_per_hold),
                ]
            raw, kassa = pair
            ratio = (
                f"{kassa.holds_per_s / raw.holds_per_s:.2f}" if raw and kassa and raw.holds else "-"
            )
            table.add_row(*cells, ratio)
    return table


def comparison(results: list[RunResult]) -> list[dict[str, Any]]:
    by_key = medians(results)
    rows = []
    for scenario, concurrency in dict.fromkeys((r.scenario, r.concurrency) for r in results):
        raw = by_key.get((scenario, concurrency, "raw"))
        kassa = by_key.get((scenario, concurrency, "kassa"))
        every = {
            f"{impl}_holds_per_s_every_repeat": [
                round(r.holds_per_s, 1)
                for r in results
                if (r.scenario, r.concurrency, r.implementation) == (scenario, concurrency, impl)
            ]
            for impl in ("raw", "kassa")
        }
        rows.append(
            {
                "scenario": scenario,
                "concurrency": concurrency,
                "raw_holds_per_s": round(raw.holds_per_s, 1) if raw else None,
                "kassa_holds_per_s": round(kassa.holds_per_s, 1) if kassa else None,
                **every,
                "kassa_over_raw": (
                    round(kassa.holds_per_s / raw.holds_per_s, 3)
                    if raw and kassa and raw.holds
                    else None
                ),
            }
        )
    return rows


def machine_info(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "event_loop": "uvloop" if args.uvloop else "asyncio",
        "postgres_server_version": setup.postgres.get("server_version"),
        "postgres": setup.postgres,
        "sqlalchemy": sqlalchemy.__version__,
        "asyncpg": asyncpg.__version__,
        "kassa_commit": git_commit(),
    }


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "database": args.url.render_as_string(hide_password=True),
        "scenarios": args.scenarios,
        "implementations": args.implementations,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "repeat": args.repeat,
        "spread_skus": args.skus,
        "stock_per_sku": STOCK,
        "ttl_seconds": TTL_SECONDS,
        "seed": args.seed,
        "quick": args.quick,
        "raw_baseline": "four statements" if args.raw_statements else "same SQL as Kassa",
    }


# Own time (tottime) grouped by where the code lives: the shortest honest answer to "where does
# a Kassa hold spend the time the baseline does not".
WAITING = "waiting for PostgreSQL (epoll)"
EVENT_LOOP = "asyncio event loop"
HARNESS = "benchmark harness"
PROFILE_GROUPS = (
    (WAITING, ("select.epoll", "select.select", "uvloop")),
    # On loopback, send() often returns only after the woken backend has had its turn on the CPU.
    ("socket send/recv (may include PG)", ("_socket.socket",)),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("greenlet", ("greenlet",)),
    ("asyncpg", ("asyncpg",)),
    ("kassa", (f"{os.sep}kassa{os.sep}",)),
    (EVENT_LOOP, (f"{os.sep}asyncio{os.sep}", "selectors.py", "_contextvars.Context")),
    (HARNESS, ("bench" + os.sep + "holds.py",)),
)


def profile_group(key: tuple[str, int, str]) -> str:
    filename, _line, function = key
    where = f"{filename} {function}"
    for name, needles in PROFILE_GROUPS:
        if any(needle in where for needle in needles):
            return name
    return "other (stdlib, builtins)"


def group_times(stats: pstats.Stats) -> dict[str, float]:
    groups: dict[str, float] = {}
    raw_stats: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for key, (_cc, _nc, tottime, _cumtime, _callers) in raw_stats.items():
        group = profile_group(key)
        groups[group] = groups.get(group, 0.0) + tottime
    return groups


def top_text(stats: pstats.Stats, sort: str, title: str) -> str:
    stream = io.StringIO()
    stats.stream = stream  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(PROFILE_TOP)
    return f"{'=' * 100}\n{title}\n{'=' * 100}\n{stream.getvalue()}"


def _function_name(filename: str, line: int, function: str) -> str:
    if filename == "~":
        return function
    return f"{os.sep.join(Path(filename).parts[-2:])}:{line}({function})"


def top_functions(
    stats: pstats.Stats, holds: int, limit: int, *, by: str
) -> list[tuple[str, str, float, float]]:
    """(function, group, entries per hold, µs per hold) by own or cumulative time, leaving out
    the event loop's plumbing and the wait for PostgreSQL."""
    raw_stats: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for key, (_cc, calls, tottime, cumtime, _callers) in raw_stats.items():
        group = profile_group(key)
        if group in (WAITING, EVENT_LOOP, HARNESS):
            continue
        seconds = tottime if by == "own" else cumtime
        rows.append((_function_name(*key), group, calls / holds, seconds / holds * 1e6))
    rows.sort(key=lambda row: row[3], reverse=True)
    return rows[:limit]


def write_profile(profiled: list[Profiled], path: Path, console: Console) -> None:
    sections = [
        "cProfile of one holder on the hot SKU. The profiler inflates every figure, most for code",
        "that makes the most Python calls. Cumulative times of coroutines and of code run inside",
        "SQLAlchemy's greenlets are approximate: cProfile does not follow greenlet switches, so a",
        "frame above one can be charged for time spent elsewhere (even waiting in epoll).",
        "",
    ]
    for item in profiled:
        per = f"{item.holds} holds in {item.seconds:g} s ({item.holds / item.seconds:.0f}/s)"
        title = f"{item.implementation}: top {PROFILE_TOP} by %s time; {per}"
        sections.append(top_text(item.stats, "cumulative", title % "cumulative"))
        sections.append(top_text(item.stats, "tottime", title % "own"))
    path.write_text("\n".join(sections))

    table = Table(title="Where one hold's time goes, µs per hold", box=box.SIMPLE_HEAVY)
    table.add_column("own time under cProfile, by package")
    for item in profiled:
        table.add_column(item.implementation, justify="right")
    grouped = [group_times(item.stats) for item in profiled]
    pairs = list(zip(grouped, profiled, strict=True))
    for name in [name for name, _ in PROFILE_GROUPS] + ["other (stdlib, builtins)"]:
        table.add_row(name, *(f"{g.get(name, 0.0) / max(i.holds, 1) * 1e6:,.0f}" for g, i in pairs))
    table.add_row(
        "[bold]total (= wall time per hold)[/]",
        *(f"[bold]{sum(g.values()) / max(i.holds, 1) * 1e6:,.0f}[/]" for g, i in pairs),
    )
    table.add_row("holds/s under cProfile", *(f"{i.holds / i.seconds:,.0f}" for i in profiled))
    table.add_section()
    table.add_row(
        "without the profiler: holds/s", *(f"{i.plain_holds_per_s:,.0f}" for i in profiled)
    )
    table.add_row(
        "without the profiler: wall µs/hold",
        *(_us(1e6 / i.plain_holds_per_s if i.plain_holds_per_s else None) for i in profiled),
    )
    table.add_row(
        "without the profiler: CPU µs/hold", *(_us(i.plain_cpu_us_per_hold) for i in profiled)
    )
    console.print(table)

    for item in profiled:
        if item.implementation != "kassa" or not item.holds:
            continue
        for by, title in (
            ("own", "Kassa: top functions by own time (µs per hold, under cProfile)"),
            ("cumulative", "Kassa: top functions by cumulative time (approximate, see the file)"),
        ):
            top = Table(title=title, box=box.SIMPLE_HEAVY)
            top.add_column("function")
            top.add_column("package")
            top.add_column("entries/hold", justify="right")
            top.add_column("µs/hold", justify="right")
            for name, group, calls, micros in top_functions(item.stats, item.holds, 12, by=by):
                top.add_row(name, group, f"{calls:.1f}", f"{micros:,.0f}")
            console.print(top)
    console.print(
        f"[dim]full listings (top {PROFILE_TOP} by cumulative and by own time, Kassa and raw): "
        f"{path.relative_to(ROOT)}; a coroutine counts one entry per resumption[/]"
    )


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Hold throughput on PostgreSQL: Kassa's hold_stock vs the same SQL on asyncpg.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"database to DROP, recreate and use (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--concurrency", help="comma-separated holder counts (default 1,16,64; --quick: 1,16)"
    )
    parser.add_argument(
        "--seconds", type=float, help="measured seconds per run (default 5; --quick: 1)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per run")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per cell; the table shows the median"
    )
    parser.add_argument("--scenarios", default="hot,spread", help="comma-separated: hot,spread")
    parser.add_argument("--implementations", default="raw,kassa", help="comma-separated: raw,kassa")
    parser.add_argument(
        "--raw-statements",
        action="store_true",
        help="baseline sends the UPDATE and three INSERTs as four statements, not Kassa's one",
    )
    parser.add_argument("--skus", type=int, default=10_000, help="SKUs in the spread scenario")
    parser.add_argument("--seed", type=int, default=1, help="seed for the spread SKU picks")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 s runs, 1 and 16")
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop (what uvicorn picks) not asyncio"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark: hot SKU, 1 holder, under cProfile, Kassa then raw",
    )
    parser.add_argument(
        "--profile-seconds", type=float, default=5.0, help="measured seconds per profiled run"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "holds.json")
    args = parser.parse_args(argv)

    args.url = bench_url(args.database_url)
    args.concurrency = _int_list(args.concurrency or ("1,16" if args.quick else "1,16,64"))
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 5.0
    args.scenarios = _choices(args.scenarios, ("hot", "spread"), parser)
    args.implementations = _choices(args.implementations, ("raw", "kassa"), parser)
    if args.seconds <= 0 or args.warmup < 0 or args.skus < 1 or args.repeat < 1:
        parser.error("--seconds must be positive, --warmup not negative, --skus and --repeat >= 1")
    return args


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise SystemExit(f"--concurrency needs positive integers, got {text!r}")
    return values


def _choices(text: str, allowed: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in allowed]
    if unknown or not chosen:
        parser.error(f"choose from {', '.join(allowed)}; got {text!r}")
    return chosen


def run_async(args: argparse.Namespace, main: Coroutine[Any, Any, T]) -> T:
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        # Piped or logged output would otherwise be cut to 80 columns and wrap the table.
        console = Console(width=130)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    if args.profile:
        profiled, _setup = run_async(args, profile(args, console))
        write_profile(profiled, RESULTS / "holds_profile.txt", console)
        return 0

    load = os.getloadavg()[0]
    if load > 0.5:
        console.print(
            f"[yellow]load average is {load:.2f} before the benchmark starts: other work on this "
            "machine will make the figures noisy[/]"
        )
    console.print(
        f"[bold]holds benchmark[/]: scenarios {', '.join(args.scenarios)}; holders "
        f"{', '.join(map(str, args.concurrency))}; {args.warmup:g} s warm-up + {args.seconds:g} s "
        f"per run{f', {args.repeat} times each' if args.repeat > 1 else ''}"
    )
    results, setup = run_async(args, benchmark(args, console))
    console.print(results_table(results, args))
    failed = [r for r in results if r.problems]
    if failed:
        console.print(f"[bold red]{len(failed)} run(s) failed verification (see above)[/]")
    else:
        console.print("[green]verified: reserved and row counts match the holds after every run[/]")

    report = {
        "benchmark": "holds",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "parameters": parameters(args),
        "machine": {**machine_info(setup, args), "load_average_at_start": round(load, 2)},
        "comparison": comparison(results),
        "runs": [r.as_json() for r in results],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(
        f"[dim]{len(results)} runs in {report['wall_seconds']} s; figures in {args.output}[/]"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
