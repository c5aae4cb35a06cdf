"""Peer on PostgreSQL: procrastinate, 3 chained tasks per run (step1 defers step2 defers
step3). Imported by ``throughput.py`` (to set up and defer) and run as a worker process::

    python -c "import _peer_procrastinate as m; m.worker_main()" --dsn DSN --concurrency 32

Task names are explicit so the driver and the workers agree on them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from procrastinate import App, PsycopgConnector

TASK_NAMES = ("bench_step1", "bench_step2", "bench_step3")


def make_app(dsn: str, *, max_pool: int = 20) -> App:
    """An app on ``dsn`` with the three chained no-op tasks registered."""
    # Same pool ceiling as a flowyard worker (pool_size 10 + overflow 10).
    app = App(connector=PsycopgConnector(conninfo=dsn, min_size=2, max_size=max_pool))

    @app.task(name="bench_step3")
    async def step3(i: int) -> None:
        return None

    @app.task(name="bench_step2")
    async def step2(i: int) -> None:
        await step3.defer_async(i=i)

    @app.task(name="bench_step1")
    async def step1(i: int) -> None:
        await step2.defer_async(i=i)

    return app


async def setup(dsn: str) -> None:
    """Create procrastinate's schema in a fresh database."""
    app = make_app(dsn, max_pool=2)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def start_runs(dsn: str, count: int, chunk: int) -> None:
    """Defer ``count`` first steps, ``chunk`` per round trip (procrastinate's bulk API)."""
    app = make_app(dsn, max_pool=2)
    async with app.open_async():
        first = app.tasks["bench_step1"]
        for lo in range(0, count, chunk):
            await first.batch_defer_async(*({"i": i} for i in range(lo, min(lo + chunk, count))))


def worker_main(argv: list[str] | None = None) -> None:
    """Entry point of one worker process."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--poll", type=float, default=0.05)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    make_app(args.dsn).run_worker(
        concurrency=args.concurrency,
        fetch_job_polling_interval=args.poll,
        listen_notify=True,
        delete_jobs="never",
        install_signal_handlers=True,
    )
