"""Peer on Redis: Celery, a chain of 3 no-op tasks per run (Celery's own chaining: the
message of task 1 carries the rest of the chain, each task publishes the next), Redis as
broker and result backend. Imported by ``throughput.py`` (to publish and to check) and run
as a worker process::

    python -c "import _peer_celery as m; m.worker_main()" --redis URL --prefix P --threads 8

Fairness notes:
- Every key this peer writes (the broker's queues, the results, the bench's own two hashes)
  starts with ``--prefix`` (kombu's and the result backend's ``global_keyprefix``), so one
  measurement neither sees another's keys nor leaves any behind (:func:`cleanup`).
- Celery has no bulk publish: each chain is one ``apply_async`` (the first message), from
  one producer connection.
- Celery keeps no start time (unless ``task_track_started``, one more write per task): the
  first task notes its first execution per process in a hash. The end is the last
  ``date_done`` of the third tasks' results (the backend's own timestamp).
- Exactly once: the third task counts itself per chain (``HINCRBY``); the check wants every
  chain counted once, and every third task's result ``SUCCESS``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime
from typing import Any

from celery import Celery, chain

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def make_app(redis_url: str, prefix: str) -> Celery:
    """An app whose broker and results live under ``prefix``, with the three tasks."""
    app = Celery("flowyard_bench", broker=redis_url, backend=redis_url)
    app.conf.update(
        broker_transport_options={"global_keyprefix": prefix},
        result_backend_transport_options={"global_keyprefix": prefix},
        task_default_queue="bench",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        result_expires=3600,
    )
    first_seen: list[float] = []

    @app.task(name="bench_step1")
    def step1(i: int) -> None:
        if not first_seen:
            first_seen.append(time.time())
            app.backend.client.hsetnx(f"{prefix}first", str(os.getpid()), repr(first_seen[0]))

    @app.task(name="bench_step2")
    def step2(i: int) -> None:
        return None

    @app.task(name="bench_step3")
    def step3(i: int) -> int:
        app.backend.client.hincrby(f"{prefix}done", str(i), 1)
        return i

    return app


def start_runs(redis_url: str, prefix: str, count: int) -> list[str]:
    """Publish ``count`` chains; returns the ids of their third tasks."""
    app = make_app(redis_url, prefix)
    s1, s2, s3 = (app.tasks[f"bench_step{n}"] for n in (1, 2, 3))
    ids: list[str] = []
    try:
        with app.producer_or_acquire() as producer:
            for i in range(count):
                ids.append(chain(s1.si(i), s2.si(i), s3.si(i)).apply_async(producer=producer).id)
    finally:
        app.close()
    return ids


def finished(redis_url: str, prefix: str) -> int:
    """Chains whose third task has run."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.hlen(f"{prefix}done"))
    finally:
        client.close()


def outcome(
    redis_url: str, prefix: str, last_ids: list[str]
) -> tuple[int, int, list[str], float | None, float | None]:
    """(chains succeeded, third tasks executed, problems, first start, last end) as Unix
    times: a chain succeeded when its third task's result says SUCCESS and it ran once."""
    import redis

    client = redis.Redis.from_url(redis_url)
    problems: list[str] = []
    try:
        counts = {int(k): int(v) for k, v in client.hgetall(f"{prefix}done").items()}
        twice = sum(1 for v in counts.values() if v != 1)
        if twice:
            problems.append(f"{twice} chains' last task ran more than once")
        ok, ends = 0, []
        for lo in range(0, len(last_ids), 1000):
            keys = [f"{prefix}celery-task-meta-{t}" for t in last_ids[lo : lo + 1000]]
            for raw in client.mget(keys):
                meta: dict[str, Any] = json.loads(raw) if raw else {}
                if meta.get("status") == "SUCCESS" and counts.get(meta["result"]) == 1:
                    ok += 1
                    ends.append(datetime.fromisoformat(meta["date_done"]).timestamp())
        missing = len(last_ids) - ok
        if missing:
            problems.append(f"{missing} chains without a successful last task run once")
        starts = [float(v) for v in client.hvals(f"{prefix}first")]
        return (
            ok,
            sum(counts.values()),
            problems,
            min(starts) if starts else None,
            max(ends) if ends else None,
        )
    finally:
        client.close()


def cleanup(redis_url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many."""
    import redis

    client = redis.Redis.from_url(redis_url)
    removed = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                removed += int(client.delete(*batch))
                batch = []
        if batch:
            removed += int(client.delete(*batch))
    finally:
        client.close()
    return removed


def worker_main(argv: list[str] | None = None) -> None:
    """Entry point of one worker process (``--threads`` threads)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    make_app(args.redis, args.prefix).worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={args.threads}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
            f"--hostname=bench-{os.getpid()}@%h",
        ]
    )
