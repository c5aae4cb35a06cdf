"""Peer on PostgreSQL: DBOS Transact, a workflow of 3 no-op steps per run, started from a
DBOS queue. Imported by ``throughput.py`` (schema, queue and enqueue through
``DBOSClient``) and run as a worker process::

    python -c "import _peer_dbos as m; m.worker_main()" --url URL --poll 0.05

Fairness notes:
- The queue has a global concurrency of 200 (what issue 13 measured) and is polled every
  ``--poll`` seconds (DBOS's default is 1 s; flowyard's workers poll every 0.05 s here).
- Runs are enqueued in bulk: ``DBOSClient.enqueue_in_transaction``, one transaction per
  chunk (DBOS has no multi-row enqueue; this is its fastest public path).
- The workflow and its steps are ``async``: they run on DBOS's event loop, as flowyard's
  steps run on asyncio (sync ones would each take a thread of an unbounded pool).
- Timed from DBOS's own columns: the first ``workflow_status.started_at_epoch_ms`` (the
  dequeue) to the last ``completed_at`` (epoch ms). Checked: every workflow ``SUCCESS``,
  exactly 3 step rows in ``operation_outputs`` for each, none recovered.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

APP = "flowyard-bench"
QUEUE = "bench"
VERSION = "bench-1"
WORKFLOW = "bench_workflow"
CONCURRENCY = 200


def _sa_url(url: str) -> str:
    """DBOS's engine is SQLAlchemy on psycopg 3."""
    for prefix in ("postgresql+asyncpg://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def setup(url: str, *, concurrency: int = CONCURRENCY, poll: float = 0.05) -> None:
    """DBOS's system schema in a fresh database, and the queue (global concurrency)."""
    from dbos import DBOSClient
    from dbos.cli.migration import run_dbos_database_migrations

    run_dbos_database_migrations(system_database_url=_sa_url(url), schema="dbos")
    client = DBOSClient(system_database_url=_sa_url(url), application_name=APP)
    try:
        client.register_queue(
            QUEUE,
            global_concurrency=concurrency,
            polling_interval_sec=poll,
            application_name=APP,
        )
    finally:
        client.destroy()


def start_runs(url: str, count: int, chunk: int) -> None:
    """Enqueue ``count`` workflows, one transaction per ``chunk``."""
    import sqlalchemy as sa
    from dbos import DBOSClient, EnqueueOptions

    engine = sa.create_engine(_sa_url(url), pool_size=1, max_overflow=0)
    client = DBOSClient(system_database_engine=engine, application_name=APP)
    options: EnqueueOptions = {
        "workflow_name": WORKFLOW,
        "queue_name": QUEUE,
        "app_version": VERSION,
    }
    try:
        for lo in range(0, count, chunk):
            with engine.begin() as conn:
                for i in range(lo, min(lo + chunk, count)):
                    client.enqueue_in_transaction(conn, options, i)
    finally:
        client.destroy()
        engine.dispose()


#: (succeeded, step rows, workflows without exactly 3 steps, recovered, first ms, last ms)
OUTCOME_SQL = """
SELECT
  (SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'),
  (SELECT count(*) FROM dbos.operation_outputs),
  (SELECT count(*) FROM (SELECT w.workflow_uuid FROM dbos.workflow_status w
     LEFT JOIN dbos.operation_outputs o USING (workflow_uuid)
     GROUP BY w.workflow_uuid HAVING count(o.function_id) <> 3) AS odd),
  (SELECT count(*) FROM dbos.workflow_status WHERE recovery_attempts > 1),
  (SELECT min(started_at_epoch_ms) FROM dbos.workflow_status),
  (SELECT max(completed_at) FROM dbos.workflow_status WHERE status = 'SUCCESS')
"""

#: Workflows that ended (success or not).
FINISHED_SQL = (
    "SELECT count(*) FROM dbos.workflow_status"
    " WHERE status NOT IN ('ENQUEUED', 'PENDING', 'DELAYED')"
)


def worker_main(argv: list[str] | None = None) -> None:
    """Entry point of one worker process: launch DBOS, run until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--executor", default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    from dbos import DBOS, DBOSConfig

    @DBOS.step(name="bench_step1")
    async def step1(i: int) -> None:
        return None

    @DBOS.step(name="bench_step2")
    async def step2(i: int) -> None:
        return None

    @DBOS.step(name="bench_step3")
    async def step3(i: int) -> None:
        return None

    @DBOS.workflow(name=WORKFLOW)
    async def bench_workflow(i: int) -> None:
        await step1(i)
        await step2(i)
        await step3(i)

    config: DBOSConfig = {
        "name": APP,
        "system_database_url": _sa_url(args.url),
        "application_version": VERSION,
        "sys_db_pool_size": 20,
        "log_level": "WARNING",
        "run_migrations": False,
    }
    if args.executor:
        config["executor_id"] = args.executor
    stop = threading.Event()

    def on_term(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    DBOS(config=config)
    DBOS.launch()
    try:
        stop.wait()
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)
