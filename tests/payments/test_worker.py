"""`kassa worker` delivers the outbox (sandbox webhooks) without the HTTP server, and
`kassa monitor` shows the stats."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from tests.checkout.flow import cart_with, open_shop, pay, start_checkout


def env_for(settings) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")} | {
        "KASSA_DATABASE_URL": settings.database_url,
        "KASSA_SECRET_KEY": settings.secret_key.get_secret_value(),
        "KASSA_SWEEP_INTERVAL_SECONDS": "0.5",
        "KASSA_OUTBOX_INTERVAL_SECONDS": "0.2",
    }


async def test_worker_delivers_webhooks_and_monitor_reports(
    client, admin, settings, make_product, tmp_path
) -> None:
    await open_shop(client, admin.headers)
    await make_product(("WICK", 3))
    cart, access = await cart_with(client, ("WICK", 1))
    checkout = (await start_checkout(client, cart, access)).json()
    assert (await pay(client, checkout["payment"]["id"], access=access)).status_code == 202
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kassa",
        "worker",
        cwd=tmp_path,
        env=env_for(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        state = "open"
        for _ in range(100):
            await asyncio.sleep(0.2)
            seen = await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)
            state = seen.json()["state"]
            if state == "completed":
                break
        assert state == "completed"
    finally:
        worker.send_signal(signal.SIGTERM)
        _, errors = await asyncio.wait_for(worker.communicate(), timeout=15)
        assert worker.returncode == 0, errors.decode()
    monitor = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kassa",
        "monitor",
        "--hours",
        "24",
        cwd=tmp_path,
        env=env_for(settings) | {"COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, errors = await asyncio.wait_for(monitor.communicate(), timeout=60)
    assert monitor.returncode == 0, errors.decode()
    shown = out.decode()
    assert "checkouts started" in shown
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in shown.splitlines()
        if line.count("│") >= 3
    }
    assert rows["checkouts started"] == "1"
    assert rows["completed"] == "1"
    assert rows["success rate"] == "100.0%"
    assert rows["webhooks received"] == "1"
