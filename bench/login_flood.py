"""Does a flood of wrong logins stall everyone else? /healthz latency during 40 concurrent logins.

Run with `.venv/bin/python bench/login_flood.py` (`--help` for the options). It starts a real
`kassa serve` on a SQLite file in a temporary directory, with one account, then measures
`GET /healthz` every 20 ms: first alone (the baseline), then while `--logins` clients each send
wrong passwords for `--seconds`. argon2 costs tens of milliseconds of CPU per check; on the event
loop, every other request waits behind the checks (the issue measured /healthz going from 4 ms to
1,965 ms with 40 wrong logins); off the loop it stays near its baseline. Prints p50, p99 and max
of /healthz and logins per second, and writes bench/results/login_flood.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EMAIL = "flood@example.com"
PASSWORD = "correct-horse-battery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def probe(http: httpx.AsyncClient, stop: asyncio.Event) -> list[float]:
    took: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        response = await http.get("/healthz")
        response.raise_for_status()
        took.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.02)
    return took


async def flood(base: str, logins: int, seconds: float) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        stop = asyncio.Event()
        quiet = asyncio.create_task(probe(http, stop))
        await asyncio.sleep(seconds / 2)
        stop.set()
        baseline = await quiet
        stop = asyncio.Event()
        attempts = 0

        async def login_forever() -> None:
            nonlocal attempts
            async with httpx.AsyncClient(base_url=base, timeout=60) as own:
                while not stop.is_set():
                    response = await own.post(
                        "/v1/auth/login", json={"email": EMAIL, "password": "wrong-password-0"}
                    )
                    assert response.status_code == 401, response.text
                    attempts += 1

        busy = asyncio.create_task(probe(http, stop))
        flooders = [asyncio.create_task(login_forever()) for _ in range(logins)]
        await asyncio.sleep(seconds)
        stop.set()
        loaded = await busy
        await asyncio.gather(*flooders)
    return {
        "logins": logins,
        "seconds": seconds,
        "logins_per_second": round(attempts / seconds, 1),
        "healthz_ms_alone": summary(baseline),
        "healthz_ms_during_flood": summary(loaded),
    }


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(samples), 1),
        "p99": round(percentile(samples, 0.99), 1),
        "max": round(max(samples), 1),
        "n": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--output", default=str(RESULTS / "login_flood.json"))
    args = parser.parse_args()
    kassa = [sys.executable, "-m", "kassa"]
    with tempfile.TemporaryDirectory() as workdir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")}
        env.update(
            KASSA_DATABASE_URL=f"sqlite+aiosqlite:///{workdir}/flood.db",
            KASSA_LOG_LEVEL="warning",
        )
        subprocess.run([*kassa, "db", "upgrade"], env=env, check=True, capture_output=True)
        subprocess.run(
            [*kassa, "users", "create", "--email", EMAIL, "--password", PASSWORD],
            env=env,
            check=True,
            capture_output=True,
        )
        port = free_port()
        server = subprocess.Popen(
            [*kassa, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("kassa serve did not start")
                time.sleep(0.1)
            result = asyncio.run(flood(base, args.logins, args.seconds))
        finally:
            server.terminate()
            server.wait(timeout=15)
    alone, busy = result["healthz_ms_alone"], result["healthz_ms_during_flood"]
    print(f"{args.logins} clients sending wrong passwords for {args.seconds:g} s")
    print(f"{'':24} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, row in (("/healthz alone", alone), ("/healthz during flood", busy)):
        assert isinstance(row, dict)
        print(f"{name:24} {row['p50']:>8} {row['p99']:>8} {row['max']:>8}")
    print(f"logins per second: {result['logins_per_second']}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
