"""Peer on SQLite: huey (SqliteHuey storage), 3 chained tasks per run (step1 enqueues step2
enqueues step3). Imported by ``throughput.py`` and run as a consumer process::

    python -c "import _peer_huey as m; m.consumer_main()" --db PATH --workers 32

Fairness notes:
- huey's SQLite storage commits with ``synchronous=FULL`` unless told otherwise and only
  offers FULL or OFF; flowyard runs WAL with ``synchronous=NORMAL``, so the storage below
  sets NORMAL too (same durability class for both).
- huey has no public bulk enqueue; :func:`start_runs` writes huey's own serialized messages
  through its storage connection, one transaction per chunk (the fastest path huey allows).
- huey keeps no timestamps: step1 notes the first execution per process in a side file and
  step3 returns ``time.time()``, which huey stores as the result (one row per finished run).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sqlite3
import sys
import time
from typing import Any

from huey import Huey
from huey.api import TaskWrapper
from huey.storage import SqliteStorage

QUEUE = "bench"


class NormalSyncSqliteStorage(SqliteStorage):
    """huey's SQLite storage with WAL + ``synchronous=NORMAL`` (as flowyard uses)."""

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


def make_huey(path: str) -> tuple[Huey, TaskWrapper]:
    """A huey on ``path`` with the three chained no-op tasks; returns (huey, step1)."""
    huey = Huey(QUEUE, storage_class=NormalSyncSqliteStorage, filename=path, timeout=30)
    first_seen: list[float] = []

    @huey.task(name="bench_step3")
    def step3(i: int) -> float:
        return time.time()

    @huey.task(name="bench_step2")
    def step2(i: int) -> None:
        step3(i)

    @huey.task(name="bench_step1")
    def step1(i: int) -> None:
        if not first_seen:
            first_seen.append(time.time())
            with open(f"{path}.first.{os.getpid()}", "w") as fh:
                fh.write(repr(first_seen[0]))
        step2(i)

    return huey, step1


def start_runs(path: str, count: int, chunk: int) -> None:
    """Enqueue ``count`` first steps, one transaction per ``chunk``."""
    huey, step1 = make_huey(path)
    for lo in range(0, count, chunk):
        rows = [
            (huey.name, huey.serialize_task(step1.s(i))) for i in range(lo, min(lo + chunk, count))
        ]
        with huey.storage.db(commit=True) as curs:
            curs.executemany("INSERT INTO task (queue, data, priority) VALUES (?, ?, 0)", rows)
    huey.storage.close()


def finished(path: str) -> int:
    """Runs whose last task has stored a result (success or error)."""
    with sqlite3.connect(path, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM kv WHERE queue = ?", (QUEUE,)).fetchone()[0])


def outcome(path: str) -> tuple[int, int, float | None, float | None]:
    """(succeeded, failed, first task start, last run end) as Unix times."""
    huey, _ = make_huey(path)
    with sqlite3.connect(path, timeout=30) as conn:
        values = [v for (v,) in conn.execute("SELECT value FROM kv WHERE queue = ?", (QUEUE,))]
    results: list[Any] = [huey.serializer.deserialize(bytes(v)) for v in values]
    ends = [r for r in results if isinstance(r, float)]
    starts = []
    for marker in glob.glob(f"{glob.escape(path)}.first.*"):
        with open(marker) as fh:
            starts.append(float(fh.read()))
    return (
        len(ends),
        len(results) - len(ends),
        min(starts) if starts else None,
        max(ends) if ends else None,
    )


def consumer_main(argv: list[str] | None = None) -> None:
    """Entry point of one consumer process (``workers`` threads)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--poll", type=float, default=0.05)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    huey, _ = make_huey(args.db)
    huey.create_consumer(
        workers=args.workers,
        worker_type="thread",
        periodic=False,
        initial_delay=args.poll,
        max_delay=args.poll,
        backoff=1.0,
    ).run()
