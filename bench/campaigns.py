"""Bulk start of a campaign: N items (NDJSON) -> the campaign, N runs, their first steps and
events, against the peer in the same run: ``store.start_runs`` in chunks of 1,000 (the bulk
start flowyard had before campaigns, bench/throughput.py's).

Timed: ``service.start_campaign`` from the NDJSON bytes to the committed transaction, the
server's work behind ``POST /api/v1/campaigns`` (parsing, strict JSON, input_schema, keys,
the spool, the inserts: COPY on PostgreSQL); the HTTP transfer of the body is not in it.
Each measurement gets a fresh database (bench/throughput.py's ``fresh_database``).

    python bench/campaigns.py                       # 50,000 items, SQLite and PostgreSQL
    python bench/campaigns.py --items 5000 --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowyard.bootstrap import build
from flowyard.campaigns.items import ItemFormat
from flowyard.settings import Settings
from throughput import WORKFLOW, bulk_start, fresh_database  # bench/ is sys.path[0]

#: The target of issue 13 per backend (seconds for 50,000 items).
TARGET_S = {"postgres": 1.0, "sqlite": 3.0}

CAMPAIGN_WORKFLOW: dict[str, Any] = {
    **WORKFLOW,
    "name": "bench-campaign",
    "input_schema": {
        "type": "object",
        "required": ["email", "i"],
        "properties": {"email": {"type": "string"}, "i": {"type": "integer"}},
    },
}


def ndjson(count: int) -> bytes:
    """``count`` items, one JSON object a line."""
    return b"".join(
        json.dumps({"email": f"user{i}@example.com", "i": i, "first": "Ada"}).encode() + b"\n"
        for i in range(count)
    )


async def campaign_start(url: str, body: bytes) -> tuple[float, int]:
    """Seconds ``start_campaign`` took for ``body``, and the runs it started."""
    container = await build(Settings(db_url=url, load_plugins=False))
    try:
        await container.service.save_workflow(CAMPAIGN_WORKFLOW, "bench")
        t0 = time.perf_counter()
        campaign, created = await container.service.start_campaign(
            "bench-campaign",
            "bench",
            ItemFormat.NDJSON,
            io.BytesIO(body),
            item_key="{{ item.email }}",
            actor="bench",
        )
        elapsed = time.perf_counter() - t0
        assert created
        return elapsed, campaign.total
    finally:
        await container.close()


def _verdict(seconds: float, target: float) -> str:
    return "met" if seconds <= target else f"MISSED by {seconds - target:.2f} s"


async def main(args: argparse.Namespace) -> int:
    body = ndjson(args.items)
    print(
        f"# campaigns bulk start: {args.items} items ({len(body) / 1e6:.1f} MB NDJSON), "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at start"
    )
    print("| backend | campaign start s | items/s | peer start_runs s | ratio | target |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            async with fresh_database(backend, args.pg_url, Path(tmp)) as loc:
                url = f"sqlite:///{loc}" if backend == "sqlite" else loc
                seconds, total = await campaign_start(url, body)
            async with fresh_database(backend, args.pg_url, Path(tmp)) as loc:
                url = f"sqlite:///{loc}" if backend == "sqlite" else loc
                peer = await bulk_start(url, WORKFLOW, args.items)
            target = TARGET_S[backend] * args.items / 50_000
            print(
                f"| {backend} | {seconds:.2f} | {total / seconds:,.0f} | {peer:.2f} | "
                f"{peer / seconds:.1f}x | <= {target:.2f} s {_verdict(seconds, target)} |"
            )
    print(
        f"# load average {os.getloadavg()[0]:.1f} at the end; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    sys.exit(asyncio.run(main(p.parse_args())))
