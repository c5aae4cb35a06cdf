"""Bulk start of a campaign: N items (NDJSON) -> the campaign, N runs, their first steps and
events, against the peer in the same run: ``store.start_runs`` in chunks of 1,000 (the bulk
start flowyard had before campaigns, bench/throughput.py's).

Timed: ``service.start_campaign`` from the NDJSON bytes to the committed transaction, the
server's work behind ``POST /api/v1/campaigns`` (parsing, strict JSON, input_schema, keys,
the spool, the inserts: COPY on PostgreSQL); the HTTP transfer of the body is not in it.
Each measurement gets a fresh database (bench/throughput.py's ``fresh_database``).

    python bench/campaigns.py                       # 50,000 items, SQLite and PostgreSQL
    python bench/campaigns.py --items 5000 --backends sqlite
    python bench/campaigns.py --profile             # where the time goes, CPU included

``--profile`` splits one start: the first pass (CPU of its thread), each table's bulk insert
(wall, and on PostgreSQL the CPU of the server process that ran it, read from /proc: the
server is on this machine) and the process's CPU. CPU seconds are fair on a loaded machine;
wall seconds are not (the load average is printed next to them).
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
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowyard.bootstrap import build
from flowyard.campaigns.items import ItemFormat
from flowyard.service import campaigns as campaign_service
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


async def campaign_start(
    url: str, body: bytes, split: Counter[str] | None = None
) -> tuple[float, int]:
    """Seconds ``start_campaign`` took for ``body``, and the runs it started; ``split``
    receives the profile (seconds by part) when given."""
    container = await build(Settings(db_url=url, load_plugins=False))
    try:
        await container.service.save_workflow(CAMPAIGN_WORKFLOW, "bench")
        if split is not None:
            _instrument(container.store, split)
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


#: The store's steps of a campaign start that ``--profile`` times, where the store has them
#: (the same script measures older trees): the bulk inserts by table (main), the runs and
#: first steps of a chunk (decision 0042), the statistics' refresh (decision 0040).
TIMED = ("_insert_rows", "_campaign_runs", "_campaign_first_steps", "_after_bulk_start")


def _instrument(store: Any, split: Counter[str]) -> None:
    """Time the first pass and the store's steps (``TIMED``) of ``store`` into ``split``."""
    accept = campaign_service._accept

    def timed_accept(*args: Any, **kwargs: Any) -> Any:
        with _timed(split, "first pass"):
            return accept(*args, **kwargs)

    def timed(name: str, method: Any) -> Any:
        async def run(conn: Any, *args: Any) -> Any:
            part = name.strip("_")
            if name == "_insert_rows":
                part = f"insert {args[0].name}"
            pid = None
            if store.dialect == "postgresql":
                pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
            server0 = _proc_cpu(pid)
            t0 = time.perf_counter()
            try:
                return await method(conn, *args)
            finally:
                split[f"{part} wall"] += time.perf_counter() - t0
                if pid is not None:
                    split[f"{part} server cpu"] += _proc_cpu(pid) - server0

        return run

    campaign_service._accept = timed_accept  # type: ignore[assignment]
    for name in TIMED:
        if hasattr(store, name):
            setattr(store, name, timed(name, getattr(store, name)))


@contextmanager
def _timed(split: Counter[str], name: str) -> Iterator[None]:
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        split[f"{name} wall"] += time.perf_counter() - t0
        split[f"{name} cpu"] += time.thread_time() - c0


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds of a local process (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    profiles: dict[str, Counter[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            split: Counter[str] | None = Counter() if args.profile else None
            async with fresh_database(backend, args.pg_url, Path(tmp)) as loc:
                url = f"sqlite:///{loc}" if backend == "sqlite" else loc
                cpu0 = time.process_time()
                seconds, total = await campaign_start(url, body, split)
                if split is not None:
                    split["process cpu (all threads)"] = time.process_time() - cpu0
                    split["start_campaign wall"] = seconds
            async with fresh_database(backend, args.pg_url, Path(tmp)) as loc:
                url = f"sqlite:///{loc}" if backend == "sqlite" else loc
                peer = await bulk_start(url, WORKFLOW, args.items)
            target = TARGET_S[backend] * args.items / 50_000
            print(
                f"| {backend} | {seconds:.2f} | {total / seconds:,.0f} | {peer:.2f} | "
                f"{peer / seconds:.1f}x | <= {target:.2f} s {_verdict(seconds, target)} |"
            )
            if split is not None:
                profiles[backend] = split
    for backend, split in profiles.items():
        print(f"\n# profile, {backend} (seconds; load average {os.getloadavg()[0]:.1f})")
        for name, value in sorted(split.items()):
            print(f"  {name:36} {value:7.2f}")
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
    p.add_argument("--profile", action="store_true", help="split the time (see above)")
    sys.exit(asyncio.run(main(p.parse_args())))
