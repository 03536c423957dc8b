"""A sweeper process for the torture tests: `run_sweep` through its own engine.

    python -m tests.torture.sweep --url URL [--batch-size 3] [--start-at UNIX_TIME]

connects, prints {"ready": true}, waits for the start (the `--start-at` time, or a line on
stdin), runs one `kassa.inventory.sweeper.run_sweep` and prints its result as one JSON line
(or {"error": "..."} if it raised), with "retried": the transient errors it silently ran again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from typing import Any

from kassa.config import Settings
from kassa.db import Database
from kassa.ops.sweeper import run_sweep
from tests.torture._engine import RetryCounter, fast_deadlock_detection, wait_for_start, warm_up


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--start-at", type=float, default=None)
    args = parser.parse_args(argv)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=args.url,
        sweep_batch_size=args.batch_size,
        sweep_interval_seconds=0,
    )
    retries = RetryCounter()
    retries.install()
    db = fast_deadlock_detection(Database(args.url, pool_size=2))
    try:
        await warm_up(db, 2)
        print(json.dumps({"ready": True}), flush=True)
        await wait_for_start(args.start_at)
        try:
            return {**asdict(await run_sweep(db, settings)), "retried": retries.errors}
        except Exception as error:
            return {"error": f"{type(error).__name__}: {error}", "retried": retries.errors}
    finally:
        await db.dispose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())), flush=True)
