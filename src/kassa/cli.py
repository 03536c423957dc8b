"""The `kassa` command: serve, migrate, seed, users, sweep, worker, monitor."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated

import typer
from rich.console import Console

from kassa import migrate
from kassa.config import ConfigError, Settings, get_settings
from kassa.db import Database

app = typer.Typer(help="Kassa: a checkout service that never oversells.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="Users and roles.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")

console = Console(stderr=True)


def _settings() -> Settings:
    try:
        settings = get_settings()
        settings.check_safe_to_start()
    except (ConfigError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    return settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
) -> None:
    """Serve the HTTP API (and run the sweeper in the background)."""
    import uvicorn

    settings = _settings()
    console.print(
        f"Kassa on http://{host}:{port}  (docs: http://{host}:{port}/docs, "
        f"database: {settings.database_url.split('://')[0]})"
    )
    uvicorn.run(
        "kassa.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        # A client that stalls (a half-sent body, an idle keep-alive) never holds a stop for
        # long, and request heads stay small.
        timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=32 * 1024,
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    settings = _settings()
    migrate.upgrade(settings.database_url, revision)
    console.print("database is up to date")


@app.command()
def seed(
    demo: Annotated[bool, typer.Option("--demo", help="Load the demo catalog")] = False,
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Only into an empty catalog")
    ] = False,
) -> None:
    """Load the demo catalog (and demo shipping and tax rates, if there are none)."""
    from kassa.seed import catalog_is_empty, seed_demo, seed_rates

    if not demo:
        console.print("nothing to seed: pass --demo")
        raise typer.Exit(1)
    settings = _settings()

    async def run() -> int:
        db = Database(settings.database_url, pool_size=1)
        try:
            await db.run(lambda s: seed_rates(s, currency=settings.currency))
            async with db.read() as session:
                if if_empty and not await catalog_is_empty(session):
                    return -1
            return await db.run(lambda s: seed_demo(s, currency=settings.currency))
        finally:
            await db.dispose()

    added = asyncio.run(run())
    console.print("catalog not empty; nothing seeded" if added < 0 else f"seeded {added} products")


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="Email address (the login)")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, confirmation_prompt=True, help="At least 10 characters"
        ),
    ],
    role: Annotated[str, typer.Option(help="customer, vendor or admin")] = "customer",
) -> None:
    """Create a user."""
    from kassa.auth import service as auth_service
    from kassa.errors import KassaError

    settings = _settings()

    async def run() -> str:
        db = Database(settings.database_url, pool_size=1)
        try:
            user = await db.run(
                lambda s: auth_service.create_user(s, email=email, password=password, role=role)
            )
            return user.id
        finally:
            await db.dispose()

    try:
        user_id = asyncio.run(run())
    except KassaError as error:
        console.print(f"[red]error:[/red] {error.detail}")
        raise typer.Exit(1) from None
    print(user_id)


@app.command()
def sweep() -> None:
    """Expire due holds now (one sweep) and print what was done."""
    from kassa.app import create_app
    from kassa.ops.sweeper import run_sweep

    settings = _settings()

    async def run() -> None:
        db = Database(settings.database_url, pool_size=2)
        try:
            local_app = create_app(settings, db=db, background=False)
            result = await run_sweep(db, settings, local_app.state.sweep_payments)
        finally:
            await db.dispose()
        print(
            f"expired_holds={result.expired_holds} released_units={result.released_units} "
            f"duration_ms={result.duration_ms}"
        )

    asyncio.run(run())


@app.command()
def reconcile() -> None:
    """Ask the payment providers now about every payment still pending after
    KASSA_RECONCILE_AFTER_SECONDS, and apply what they say exactly as a webhook would."""
    from kassa.app import create_app
    from kassa.checkout.recovery import reconcile as run_reconcile

    settings = _settings()

    async def run() -> None:
        db = Database(settings.database_url, pool_size=2)
        try:
            state = create_app(settings, db=db, background=False).state
            result = await run_reconcile(db, state.events, state.providers, settings)
        finally:
            await db.dispose()
        print(
            f"checked={result.checked} succeeded={result.succeeded} failed={result.failed} "
            f"unchanged={result.unchanged}"
        )

    asyncio.run(run())


@app.command()
def worker() -> None:
    """Run the background loops without the HTTP server: the expiry sweeper and the outbox
    (sandbox webhook deliveries, provider refunds)."""
    import httpx

    from kassa.app import create_app, webhook_client, wire
    from kassa.ops.logs import configure_logging
    from kassa.ops.sweeper import sweeper_loop

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    interval = settings.sweep_interval_seconds or 30.0
    outbox_interval = settings.outbox_interval_seconds or 1.0
    settings = settings.model_copy(
        update={"sweep_interval_seconds": interval, "outbox_interval_seconds": outbox_interval}
    )

    async def run() -> None:
        db = Database(settings.database_url, pool_size=4)
        # Without KASSA_SANDBOX_WEBHOOK_URL the webhooks go to an in-process copy of the app,
        # through its whole HTTP stack (signature check included), on the same database.
        local_app = create_app(settings, db=db, background=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(
            f"worker: sweeping every {interval:g} s, outbox every {outbox_interval:g} s "
            "(Ctrl-C stops)"
        )
        http: httpx.AsyncClient
        try:
            async with webhook_client(local_app, settings) as http:
                wire(local_app, db, settings, http)
                state = local_app.state
                await asyncio.gather(
                    sweeper_loop(db, settings, stop, state.sweep_payments),
                    state.outbox.run(stop, interval_seconds=outbox_interval),
                )
        finally:
            await db.dispose()

    asyncio.run(run())


@app.command()
def monitor(
    hours: Annotated[int, typer.Option(min=1, max=24 * 90, help="The window, in hours")] = 24,
) -> None:
    """Checkout and webhook stats of the last HOURS as a table."""
    from rich.table import Table

    from kassa.ops import stats as ops_stats

    settings = _settings()

    async def collect() -> ops_stats.Stats:
        db = Database(settings.database_url, pool_size=1)
        try:
            async with db.read() as session:
                return await ops_stats.collect(session, hours=hours)
        finally:
            await db.dispose()

    stats = asyncio.run(collect())
    out = Console()
    table = Table(title=f"Kassa, last {hours} h (since {stats.since:%Y-%m-%d %H:%M} UTC)")
    table.add_column("what")
    table.add_column("count", justify="right")
    rate = "n/a" if stats.success_rate is None else f"{stats.success_rate:.1%}"
    for label, value in (
        ("checkouts started", stats.started),
        ("completed", stats.completed),
        ("expired", stats.expired),
        ("cancelled", stats.cancelled),
        ("failed to start", stats.failed),
        ("success rate", rate),
        ("price-drift rejections", stats.price_drift_rejections),
        ("payments failed at the provider", stats.payment_failures),
        ("late payments refunded", stats.late_payments_refunded),
        ("webhooks received", stats.webhooks_received),
        ("  processed", stats.webhooks_processed),
        ("  duplicated", stats.webhooks_duplicated),
        ("  rejected", stats.webhooks_rejected),
        ("  ignored", stats.webhooks_ignored),
        ("  kept for later (deferred)", stats.webhooks_deferred),
    ):
        table.add_row(label, str(value))
    for phase, count in sorted(stats.failures_by_phase.items()):
        table.add_row(f"failures in {phase}", str(count))
    out.print(table)
    if stats.phase_timings:
        timing = Table(title="phase timings (successful runs)")
        for column in ("phase", "runs", "mean ms", "max ms"):
            timing.add_column(column, justify="left" if column == "phase" else "right")
        for phase, t in stats.phase_timings.items():
            timing.add_row(phase, str(t.count), f"{t.mean_ms:.1f}", f"{t.max_ms:.1f}")
        out.print(timing)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
