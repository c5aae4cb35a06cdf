"""Reading a workflow with its nodes: ``GET /api/v1/workflows/{ref}`` with the read cache
(decision 0030) against the same read with the cache emptied before every request.

In-process: the app on a container, requests through httpx's ASGI transport (the whole
route: authentication, the reads, the answer's JSON), and the service's two reads alone
(``get_workflow`` + ``get_version``). Definitions are ``bench/drafts.py``'s chains (logs
reading the previous node, a condition every tenth) of 10 and 1,000 nodes. The peer,
measured in the same run, is the same code with the cache emptied before each read: the
workflow's row and the version read from the database and parsed every time.

On SQLite the cache keeps versions only (another process cannot notify: the workflow's row
is read every time); on PostgreSQL (``--pg URL``, an empty database) it also keeps the row
while its ``LISTEN`` connection is up.

    python bench/reads.py                       # SQLite
    python bench/reads.py --pg postgresql://postgres@127.0.0.1:5432/bench_reads
    python bench/reads.py --reads 500 --json out.json

The machine's load (``uptime``) is printed with the numbers: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from flowyard.api import create_app
from flowyard.bootstrap import Container, build
from flowyard.domain.auth import Role
from flowyard.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from drafts import definition  # a sibling script, not a package


def p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


async def timed(fn: Callable[[], Awaitable[Any]], reads: int, before: Callable[[], None]) -> float:
    samples = []
    for _ in range(reads):
        before()
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return p50_ms(samples)


def emptied(container: Container) -> Callable[[], None]:
    """Empty the read cache (what an uncached read costs)."""
    return container.service.reads.clear


async def measure(container: Container, size: int, reads: int) -> dict[str, Any]:
    service = container.service
    raw = definition(size)
    record, _ = await service.create_workflow(raw, "bench", require_credentials=False)
    name = raw["name"]
    await container.auth.create_user(f"reader{size}", "purple-larch-quill-bench", Role.VIEWER)
    user = await container.auth.get_user_by_name(f"reader{size}")
    token = (await container.auth.issue_tokens(user)).access_token
    app = create_app(container.settings, container=container)
    result: dict[str, Any] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bench/api/v1",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:

        async def get() -> None:
            response = await client.get(f"/workflows/{name}")
            assert response.status_code == 200, response.text

        async def service_read() -> None:
            found = await service.get_workflow(name)
            await service.get_version(found.id, found.latest_version)

        await get()  # the app's first request starts the change listener (PostgreSQL)
        for label, fn in (("GET", get), ("service", service_read)):
            uncached = await timed(fn, reads, emptied(container))
            cached = await timed(fn, reads, lambda: None)
            result[label] = {
                "uncached_p50_ms": uncached,
                "cached_p50_ms": cached,
                "speedup": round(uncached / max(cached, 1e-6), 1),
            }
    result["row_cached"] = service.changes.live
    del record
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"load": os.getloadavg(), "reads": args.reads}
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'reads.db'}"}
        if args.pg:
            urls["postgres"] = args.pg
        for backend, url in urls.items():
            settings = Settings(db_url=url, workers=0, load_plugins=False, rate_limit_enabled=False)
            container = await build(settings)
            try:
                report[backend] = {
                    str(size): await measure(container, size, args.reads) for size in args.nodes
                }
            finally:
                await container.close()
    return report


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--pg", help="also on this (empty) PostgreSQL database")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    report = asyncio.run(main(args))
    print(f"load average {report['load']}")
    for backend in ("sqlite", "postgres"):
        for size, result in report.get(backend, {}).items():
            print(f"{backend} {size} nodes: {result}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    cli()
