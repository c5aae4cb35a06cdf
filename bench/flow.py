"""Flow control at scale: a 10,000-item map on PostgreSQL, and a 1,000-node definition.

1. **Map** (PostgreSQL, a fresh ``CREATE DATABASE bench_<rand>`` per measurement):

   - *map*: ONE run of ``trigger -> map(items={{ input.items }}, start=work,
     max_concurrency=C) -> end(output={{ steps.each.output | length }})`` whose per-item
     sub-graph is one ``set`` node (``{"v": "{{ item * 2 }}"}``), input
     ``{"items": [0 .. N-1]}``, drained by K ``flowyard worker`` processes. Checked: the run
     succeeded, its output is N and the map step's output is ``[{"v": 2*i} ...]`` in order.
   - *separate* (the peer): the same N items as N runs of ``trigger -> set -> end``
     (``{"v": "{{ input.i * 2 }}"}``), bulk started with ``store.start_runs`` (chunks of
     1,000) and drained by K workers configured the same way.

   Drain time comes from DB timestamps: ``runs.started_at`` (first step claimed) of the map
   run -> its ``finished_at``; for the separate runs ``min(started_at) -> max(finished_at)``.
   Peak RSS is each worker's ``VmHWM`` (``/proc/<pid>/status``) read just before it is
   stopped (``VmRSS`` is sampled every 0.2 s as well). The idle baseline is one worker on an
   empty database, read the same way 2 s after it reported ready. *First result*: drain start
   -> the first item done (map: first branch finished; separate: first run finished).
   ``--analyze`` runs ``ANALYZE`` once the map's branch rows exist (separate: after the bulk
   start); by default the fresh database has no planner statistics during the drain.

2. **Definition** (in-process; SQLite for the store): a generated graph of 1,000 nodes
   (a chain of ``set`` nodes, every 10th a ``condition`` that branches into two ``set``
   nodes which join again) and one of 10 nodes. Timed, medians of 5:
   ``DefinitionValidator.validate`` cold (a new ``ExpressionEngine`` each time, so every
   template is compiled) and warm (the engine's compile cache already holds them);
   ``service.save_workflow`` on a freshly built container (a new name each time); and a cold
   load + compile through ``container.cache.get`` on a freshly built container.
   Peer: the same document checked by plain ``jsonschema`` against
   ``schema/workflow.schema.json`` (structure only; validator built once).

    python bench/flow.py                                   # everything (~1 min on 2 cores)
    python bench/flow.py --items 2000 --skip-definition    # quick map check
    python bench/flow.py --analyze --skip-definition       # with planner statistics
    python bench/flow.py --skip-map --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from flowyard.bootstrap import build
from flowyard.domain.ids import WorkflowId
from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.registry import default_registry
from flowyard.settings import Settings
from throughput import (
    BUSY_WARN,
    _as_utc,
    _busy_cores,
    _engine,
    _fmt,
    _machine,
    _ratio,
    _rows,
    _tail,
    bulk_start,
    fresh_database,
    spawn,
    stop,
    wait_done,
)

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "schema" / "workflow.schema.json"
CHUNK = 1_000
POLL_S = 0.2
WORKER_POLL_S = 0.05
IDLE_S = 2.0
READY_LINE = b"flowyard worker:"
REPEAT = 5
TERMINAL_RUN = ("succeeded", "failed", "cancelled", "timed_out")


def map_workflow(concurrency: int) -> dict[str, Any]:
    """One run maps over ``input.items``; each item runs one ``set`` node."""
    return {
        "name": "bench-map",
        "description": "Map over input.items: one set node per item.",
        "start": "trigger",
        "nodes": [
            {"id": "trigger", "type": "trigger", "next": "each"},
            {
                "id": "each",
                "type": "map",
                "config": {
                    "items": "{{ input.items }}",
                    "start": "work",
                    "max_concurrency": concurrency,
                },
                "next": "end",
            },
            {"id": "work", "type": "set", "config": {"values": {"v": "{{ item * 2 }}"}}},
            {"id": "end", "type": "end", "config": {"output": "{{ steps.each.output | length }}"}},
        ],
    }


SEPARATE_WORKFLOW: dict[str, Any] = {
    "name": "bench-separate",
    "description": "One item per run: the map's peer.",
    "start": "trigger",
    "nodes": [
        {"id": "trigger", "type": "trigger", "next": "work"},
        {
            "id": "work",
            "type": "set",
            "config": {"values": {"v": "{{ input.i * 2 }}"}},
            "next": "end",
        },
        {"id": "end", "type": "end"},
    ],
}


def big_workflow(size: int, name: str = "bench-big") -> dict[str, Any]:
    """``size`` nodes: trigger, a chain of ``set`` nodes where every 10th position is a
    ``condition`` routing to one of two ``set`` nodes that both continue the chain, and an
    ``end``. Every expression is valid and refers to a step every path runs before it."""
    nodes: dict[str, dict[str, Any]] = {"trigger": {"id": "trigger", "type": "trigger"}}
    tails = ["trigger"]  # the nodes whose next is the node added next
    last = None  # the last chain `set` node: every path runs it

    def add(node: dict[str, Any], *, link: bool = True) -> None:
        if link:
            for tail in tails:
                nodes[tail]["next"] = node["id"]
        nodes[node["id"]] = node

    def value(k: int) -> str:
        return (
            "{{ input.x | default(0) }}"
            if last is None
            else f"{{{{ steps.{last}.output.v + {k} }}}}"
        )

    i = 0
    while len(nodes) < size - 1:
        if i % 10 == 9 and last is not None and size - 1 - len(nodes) >= 3:
            cond, hi, lo = f"c{i:04d}", f"h{i:04d}", f"l{i:04d}"
            when = f"steps.{last}.output.v % 2 == 0"
            add(
                {
                    "id": cond,
                    "type": "condition",
                    "config": {"cases": [{"when": when, "next": hi}], "default": lo},
                }
            )
            add({"id": hi, "type": "set", "config": {"values": {"v": value(1)}}}, link=False)
            add({"id": lo, "type": "set", "config": {"values": {"v": value(2)}}}, link=False)
            tails = [hi, lo]
        else:
            node_id = f"s{i:04d}"
            add({"id": node_id, "type": "set", "config": {"values": {"v": value(i % 7)}}})
            tails, last = [node_id], node_id
        i += 1
    add({"id": "end", "type": "end", "config": {"output": {"v": value(0)}}})
    return {
        "name": name,
        "description": f"A generated {size}-node definition.",
        "start": "trigger",
        "nodes": list(nodes.values()),
    }


# -- map ---------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process in KiB (empty when it is gone)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                found[key] = int(value.split()[0])
    return found


@dataclass
class MapResult:
    """One drain: the map run or the N separate runs."""

    system: str
    items: int
    procs: int
    concurrency: int
    worker_concurrency: int
    start_s: float | None = None
    drain_db_s: float | None = None
    drain_wall_s: float | None = None
    #: Drain start -> the first item result (map: first branch finished; separate: first run).
    first_done_s: float | None = None
    #: Peak RSS (VmHWM) of each worker process, MiB.
    peak_rss_mib: list[float] = field(default_factory=list)
    #: Highest VmRSS seen by the 0.2 s sampler, per worker, MiB.
    sampled_rss_mib: list[float] = field(default_factory=list)
    verified: bool = False
    steps_done: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    busy_before: float | None = None

    @property
    def ok(self) -> bool:
        """Finished, checked and timed."""
        return self.error is None and self.verified and bool(self.drain_db_s)

    def items_rate(self) -> float | None:
        """Items per second over the DB-timestamp drain window."""
        return self.items / self.drain_db_s if self.ok and self.drain_db_s else None

    def peak_rss(self) -> float | None:
        """The largest worker peak RSS, MiB."""
        return max(self.peak_rss_mib) if self.peak_rss_mib else None


class RssWatch:
    """Samples the workers' VmRSS and keeps their last VmHWM (the kernel's peak)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.rss = dict.fromkeys(self.pids, 0)
        self.hwm = dict.fromkeys(self.pids, 0)

    def sample(self) -> None:
        """Read every worker's status once."""
        for pid in self.pids:
            status = proc_status(pid)
            self.rss[pid] = max(self.rss[pid], status.get("VmRSS", 0))
            self.hwm[pid] = max(self.hwm[pid], status.get("VmHWM", 0))

    def into(self, res: MapResult) -> None:
        """Record MiB figures."""
        res.peak_rss_mib = [round(self.hwm[p] / 1024, 1) for p in self.pids]
        res.sampled_rss_mib = [round(self.rss[p] / 1024, 1) for p in self.pids]


async def analyze(engine: AsyncEngine) -> None:
    """Refresh the planner statistics of the tables the workers query."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("ANALYZE branches, steps, runs, run_events"))
        await conn.commit()


def _worker_env() -> dict[str, str]:
    return {
        **os.environ,
        "FLOWYARD_POLL_INTERVAL_S": str(WORKER_POLL_S),
        "FLOWYARD_LOAD_PLUGINS": "0",
    }


def _worker_cmd(url: str, concurrency: int) -> list[str]:
    exe = str(Path(sys.executable).with_name("flowyard"))
    return [exe, "worker", "--db", url, "--concurrency", str(concurrency)]


async def _wait_ready(log: Path, count: int, timeout_s: float = 30) -> None:
    """Until ``count`` workers printed their start-up line to ``log``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if log.read_bytes().count(READY_LINE) >= count:
                return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"workers not ready after {timeout_s:.0f} s: {_tail(log)}")


async def idle_rss(url: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """One worker on an empty database: RSS 2 s after it reported ready."""
    log = workdir / "idle.log"
    [worker] = spawn([_worker_cmd(url, args.worker_concurrency)], _worker_env(), log)
    try:
        await _wait_ready(log, 1)
        watch = RssWatch([worker.pid])
        t0 = time.monotonic()
        while time.monotonic() - t0 < IDLE_S:
            watch.sample()
            await asyncio.sleep(POLL_S)
        watch.sample()
        return {
            "hwm_mib": round(watch.hwm[worker.pid] / 1024, 1),
            "rss_mib": round(watch.rss[worker.pid] / 1024, 1),
        }
    finally:
        stop([worker])


async def _drain(
    res: MapResult,
    url: str,
    expected: int,
    terminal: Callable[[], Awaitable[int]],
    progress: Callable[[], Awaitable[str]],
    args: argparse.Namespace,
    log: Path,
    poke: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Start K workers, wait until ``terminal()`` reaches ``expected`` while sampling RSS
    (and printing progress every 10 s; ``poke`` is called at every poll), read VmHWM, stop
    the workers."""
    cmd = _worker_cmd(url, args.worker_concurrency)
    workers = spawn([cmd] * args.procs, _worker_env(), log)
    watch = RssWatch([w.pid for w in workers])
    last_report = time.monotonic()

    async def sampled() -> int:
        nonlocal last_report
        watch.sample()
        if poke is not None:
            await poke()
        if time.monotonic() - last_report >= 10:
            last_report = time.monotonic()
            print(f"    ... {res.system}: {await progress()}", flush=True)
        return await terminal()

    try:
        res.drain_wall_s = await wait_done(sampled, expected, workers, args.timeout, log)
    except (RuntimeError, TimeoutError) as exc:
        res.error = str(exc)
        with contextlib.suppress(Exception):
            res.notes.append(f"at the end: {await progress()}")
    finally:
        watch.sample()
        watch.into(res)
        stop(workers)


async def bench_map(url: str, args: argparse.Namespace, log: Path) -> MapResult:
    """One run mapping over N items."""
    res = MapResult("map", args.items, args.procs, args.concurrency, args.worker_concurrency)
    container = await build(Settings(db_url=url, load_plugins=False))
    try:
        record, _, _ = await container.service.save_workflow(
            map_workflow(args.concurrency), "bench"
        )
        t0 = time.perf_counter()
        run, _ = await container.service.start_run(record.id, {"items": list(range(args.items))})
        res.start_s = time.perf_counter() - t0
    finally:
        await container.close()
    engine = _engine(url)
    try:

        async def terminal() -> int:
            rows = await _rows(engine, f"SELECT status FROM runs WHERE id = '{run.id}'")
            return int(rows[0][0] in TERMINAL_RUN)

        async def progress() -> str:
            rows = await _rows(engine, "SELECT status, count(*) FROM branches GROUP BY status")
            return "branches " + ", ".join(f"{s}={c}" for s, c in sorted(rows))

        analyzed = False

        async def poke() -> None:
            """--analyze: refresh the planner statistics once the map's branch rows exist."""
            nonlocal analyzed
            if analyzed:
                return
            [(count,)] = await _rows(engine, "SELECT count(*) FROM branches")
            if count >= args.items:
                t0 = time.perf_counter()
                await analyze(engine)
                analyzed = True
                took = time.perf_counter() - t0
                res.notes.append(f"ANALYZE once the {count} branch rows existed ({took:.2f} s)")

        await _drain(res, url, 1, terminal, progress, args, log, poke if args.analyze else None)
        [(status, output, error, started, finished)] = await _rows(
            engine,
            "SELECT status, output, error, started_at, finished_at FROM runs"
            f" WHERE id = '{run.id}'",
        )
        if started and finished:
            res.drain_db_s = (_as_utc(finished) - _as_utc(started)).total_seconds()  # type: ignore[operator]
        [(first,)] = await _rows(engine, "SELECT min(finished_at) FROM branches")
        if started and first:
            res.first_done_s = (_as_utc(first) - _as_utc(started)).total_seconds()  # type: ignore[operator]
        step_rows = await _rows(engine, "SELECT status, count(*) FROM steps GROUP BY status")
        res.steps_done = sum(int(c) for s, c in step_rows if s == "succeeded")
        if extra := {s: int(c) for s, c in step_rows if s != "succeeded"}:
            res.notes.append(f"steps not succeeded: {extra}")
        if status != "succeeded":
            res.notes.append(f"run {status}: {error}")
            return res
        mapped = await _rows(
            engine,
            f"SELECT output FROM steps WHERE run_id = '{run.id}' AND node_id = 'each'"
            " AND status = 'succeeded'",
        )
        want = [{"v": 2 * i} for i in range(args.items)]
        got = mapped[0][0] if len(mapped) == 1 else None
        res.verified = output == args.items and got == want
        if not res.verified:
            shown = got[:3] if isinstance(got, list) else got
            res.notes.append(f"unexpected output: run {output!r}, map step {shown!r}...")
    finally:
        await engine.dispose()
    return res


async def bench_separate(url: str, args: argparse.Namespace, log: Path) -> MapResult:
    """The same N items as N runs of ``trigger -> set -> end``."""
    res = MapResult("separate", args.items, args.procs, args.concurrency, args.worker_concurrency)
    res.start_s = await bulk_start(url, SEPARATE_WORKFLOW, args.items)
    engine = _engine(url)
    if args.analyze:
        await analyze(engine)
        res.notes.append("ANALYZE after the bulk start")
    in_list = ", ".join(f"'{s}'" for s in TERMINAL_RUN)
    try:

        async def terminal() -> int:
            rows = await _rows(engine, f"SELECT count(*) FROM runs WHERE status IN ({in_list})")
            return int(rows[0][0])

        async def progress() -> str:
            return f"{await terminal()}/{args.items} runs terminal"

        await _drain(res, url, args.items, terminal, progress, args, log)
        [(first, last, done)] = await _rows(
            engine, "SELECT min(started_at), max(finished_at), min(finished_at) FROM runs"
        )
        if first and last:
            res.drain_db_s = (_as_utc(last) - _as_utc(first)).total_seconds()  # type: ignore[operator]
            res.first_done_s = (_as_utc(done) - _as_utc(first)).total_seconds()  # type: ignore[operator]
        step_rows = await _rows(engine, "SELECT status, count(*) FROM steps GROUP BY status")
        res.steps_done = sum(int(c) for s, c in step_rows if s == "succeeded")
        if extra := {s: int(c) for s, c in step_rows if s != "succeeded"}:
            res.notes.append(f"steps not succeeded: {extra}")
        run_rows = await _rows(engine, "SELECT status, count(*) FROM runs GROUP BY status")
        by_status = {s: int(c) for s, c in run_rows}
        [(ok_outputs,)] = await _rows(
            engine,
            "SELECT count(*) FROM steps s JOIN runs r ON r.id = s.run_id"
            " WHERE s.node_id = 'work' AND s.status = 'succeeded'"
            " AND (s.output->>'v')::int = 2 * (r.input->>'i')::int",
        )
        res.verified = by_status.get("succeeded") == args.items and ok_outputs == args.items
        if not res.verified:
            res.notes.append(f"runs {by_status}, {ok_outputs} correct outputs")
    finally:
        await engine.dispose()
    return res


async def run_map(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Idle baseline, the map run and the separate runs, each in its own fresh database."""
    out: dict[str, Any] = {"results": []}
    async with fresh_database("postgres", args.pg_url, workdir) as url:
        container = await build(Settings(db_url=url, load_plugins=False))  # migrate
        await container.close()
        out["idle"] = await idle_rss(url, args, workdir)
    print(
        f"  idle worker: VmHWM {out['idle']['hwm_mib']} MiB (VmRSS {out['idle']['rss_mib']} MiB)",
        flush=True,
    )
    for system, fn in (("map", bench_map), ("separate", bench_separate)):
        busy = await _busy_cores()
        log = workdir / f"{system}.log"
        try:
            async with fresh_database("postgres", args.pg_url, workdir) as url:
                res = await fn(url, args, log)
        except Exception as exc:
            res = MapResult(
                system, args.items, args.procs, args.concurrency, args.worker_concurrency
            )
            res.error = f"{type(exc).__name__}: {exc}"
        res.busy_before = busy
        out["results"].append(res)
        _report_map(res, log)
    return out


def _report_map(r: MapResult, log: Path) -> None:
    status = "ok" if r.ok else f"INCOMPLETE: {r.error or r.notes}"
    print(
        f"  {r.system:9} start {_fmt(r.start_s, 2)} s  drain {_fmt(r.drain_db_s, 2)} s"
        f" (first result {_fmt(r.first_done_s, 2)} s)"
        f" (wall {_fmt(r.drain_wall_s, 2)} s)  {_fmt(r.items_rate())} items/s"
        f"  peak RSS {r.peak_rss_mib} MiB  {status}",
        flush=True,
    )
    for note in r.notes:
        print(f"    note: {note}")
    if not r.ok and r.error and log.exists():
        print(f"    worker log tail:\n{_tail(log)}")


def map_table(out: dict[str, Any]) -> str:
    """The map measurements as Markdown, the map row with its ratios to the separate runs."""
    results: list[MapResult] = out["results"]
    peer = next((r for r in results if r.system == "separate"), None)
    lines = [
        "| system | items | drain (db) s | first result s | drain (wall) s | items/s"
        " | time ratio map/separate"
        " | peak RSS per worker MiB | RSS ratio map/separate | idle worker MiB | steps"
        " | verified | busy before |",
        "|" + "---|" * 13,
    ]
    for r in results:
        is_map = r.system == "map" and peer is not None
        time_ratio = _ratio(r.drain_db_s, peer.drain_db_s) if is_map and peer else ""
        rss_ratio = _ratio(r.peak_rss(), peer.peak_rss()) if is_map and peer else ""
        lines.append(
            f"| {r.system} | {r.items:,} | {_fmt(r.drain_db_s, 2)} | {_fmt(r.first_done_s, 2)}"
            f" | {_fmt(r.drain_wall_s, 2)}"
            f" | {_fmt(r.items_rate())} | {time_ratio}"
            f" | {' / '.join(f'{v:.0f}' for v in r.peak_rss_mib) or '-'} | {rss_ratio}"
            f" | {_fmt(out['idle']['hwm_mib'])} | {r.steps_done:,}"
            f" | {'yes' if r.verified else 'NO'}{'' if r.ok else ' INCOMPLETE'}"
            f" | {_fmt(r.busy_before, 1)} |"
        )
    return "\n".join(lines)


# -- definition --------------------------------------------------------------------------------


def _median_ms(fn: Callable[[], Any], repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


async def _amedian_ms(fn: Callable[[int], Awaitable[Any]], repeat: int = REPEAT) -> float:
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        await fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _validator() -> DefinitionValidator:
    """As ``bootstrap.build`` makes it: built-in node types, default expression limits."""
    return DefinitionValidator(default_registry(load_plugins=False), ExpressionEngine())


async def bench_definition(size: int, workdir: Path) -> dict[str, Any]:
    """validate (cold and warm) / jsonschema / save / cold load of one generated definition."""
    definition = big_workflow(size)
    validator = _validator()
    result = validator.validate(definition)
    if not result.ok:
        raise RuntimeError(f"the generated definition is invalid: {result.problems[:3]}")
    schema = json.loads(SCHEMA.read_text())
    schema_validator = jsonschema.validators.validator_for(schema)(schema)
    schema_validator.validate(definition)  # raises if the structure is wrong
    fresh = [_validator() for _ in range(REPEAT)]  # each with an empty expression cache
    out: dict[str, Any] = {
        "nodes": len(definition["nodes"]),
        "json_kib": round(len(json.dumps(definition)) / 1024, 1),
        # Cold: a new ExpressionEngine, so every template is compiled (a process's first use).
        "validate_cold_ms": _median_ms(lambda: fresh.pop().validate(definition)),
        # Warm: the same engine again; its compile cache already holds every expression.
        "validate_warm_ms": _median_ms(lambda: validator.validate(definition)),
        "jsonschema_ms": _median_ms(lambda: schema_validator.validate(definition)),
    }
    url = f"sqlite:///{workdir / f'definition-{size}.db'}"
    saved: list[tuple[str, int]] = []
    saves: list[float] = []
    loads: list[float] = []
    reads: list[float] = []
    for i in range(REPEAT):
        # A fresh container per save: what `flowyard` does the first time it sees it.
        container = await build(Settings(db_url=url, load_plugins=False))
        try:
            t0 = time.perf_counter()
            record, version, _ = await container.service.save_workflow(
                {**definition, "name": f"bench-big-{size}-{i}"}, "bench"
            )
            saves.append(time.perf_counter() - t0)
            saved.append((record.id, version.version))
        finally:
            await container.close()
    for workflow_id, number in saved:
        container = await build(Settings(db_url=url, load_plugins=False))
        try:
            t0 = time.perf_counter()
            compiled = await container.cache.get(workflow_id, number)
            loads.append(time.perf_counter() - t0)
            if len(compiled.nodes) != len(definition["nodes"]):
                raise RuntimeError("the loaded definition lost nodes")
            t0 = time.perf_counter()
            await container.store.get_version(WorkflowId(workflow_id), number)
            reads.append(time.perf_counter() - t0)
        finally:
            await container.close()
    out["save_ms"] = statistics.median(saves) * 1000
    out["cold_load_ms"] = statistics.median(loads) * 1000
    out["db_read_ms"] = statistics.median(reads) * 1000
    return out


def definition_table(rows: Sequence[dict[str, Any]]) -> str:
    """Definition timings as Markdown (medians of 5)."""
    lines = [
        "| nodes | JSON KiB | validate cold ms | validate warm ms | jsonschema ms"
        " | ratio validate/jsonschema (cold / warm) | save_workflow ms | cold cache.get ms"
        " | of which DB read ms |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        cold = _ratio(r["validate_cold_ms"], r["jsonschema_ms"])
        warm = _ratio(r["validate_warm_ms"], r["jsonschema_ms"])
        lines.append(
            f"| {r['nodes']:,} | {r['json_kib']} | {r['validate_cold_ms']:.2f}"
            f" | {r['validate_warm_ms']:.2f} | {r['jsonschema_ms']:.2f} | {cold} / {warm}"
            f" | {r['save_ms']:.2f} | {r['cold_load_ms']:.2f} | {r['db_read_ms']:.2f} |"
        )
    return "\n".join(lines)


# -- driver ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--items", type=int, default=10_000, help="map items (default 10000)")
    p.add_argument("--procs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--concurrency", type=int, default=200, help="map max_concurrency (200)")
    p.add_argument(
        "--worker-concurrency", type=int, default=32, help="concurrent steps per worker (32)"
    )
    p.add_argument("--sizes", default="10,1000", help="definition sizes (default 10,1000)")
    p.add_argument(
        "--analyze",
        action="store_true",
        help="ANALYZE the tables once the map's branches (or the separate runs) exist",
    )
    p.add_argument("--skip-map", action="store_true")
    p.add_argument("--skip-definition", action="store_true")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--timeout", type=float, default=None, help="seconds per drain")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if min(args.items, args.procs, args.concurrency, args.worker_concurrency, *args.sizes) < 1:
        p.error("--items, --procs, --concurrency, --worker-concurrency, --sizes must be >= 1")
    if min(args.sizes) < 4:
        p.error("--sizes: at least 4 nodes")
    if args.timeout is None:
        args.timeout = 60 + args.items * 0.03
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected parts, print the tables, optionally write JSON; exit 1 on failures."""
    args = parse_args(argv)
    machine = _machine()
    print(
        f"flowyard flow control: map {args.items} items (max_concurrency {args.concurrency}),"
        f" {args.procs} worker processes x {args.worker_concurrency}, definitions {args.sizes},"
        f" {machine['cpus']} CPUs, Python {machine['python']}",
        flush=True,
    )
    payload: dict[str, Any] = {
        "machine": machine,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    ok = True
    tables = []
    with tempfile.TemporaryDirectory(prefix="flowyard-bench-flow-") as tmp:
        workdir = Path(tmp)
        if not args.skip_map:
            print("map (PostgreSQL):", flush=True)
            out = await run_map(args, workdir)
            ok = ok and all(r.ok for r in out["results"])
            tables.append(map_table(out))
            payload["map"] = {
                "idle_worker": out["idle"],
                "results": [
                    {**asdict(r), "items_per_s": r.items_rate(), "peak_rss_max_mib": r.peak_rss()}
                    for r in out["results"]
                ],
            }
        if not args.skip_definition:
            print("definitions (validate in memory, store on SQLite):", flush=True)
            rows = []
            for size in args.sizes:
                row = await bench_definition(size, workdir)
                print(
                    f"  {row['nodes']:>5} nodes: validate {row['validate_cold_ms']:.2f} ms cold,"
                    f" {row['validate_warm_ms']:.2f} ms warm,"
                    f" jsonschema {row['jsonschema_ms']:.2f} ms, save {row['save_ms']:.2f} ms,"
                    f" cold load {row['cold_load_ms']:.2f} ms",
                    flush=True,
                )
                rows.append(row)
            tables.append(definition_table(rows))
            payload["definitions"] = rows
    for t in tables:
        print()
        print(t)
    print(
        "\ndrain: DB timestamps (map: the run's started_at -> finished_at; separate:"
        " min(started_at) -> max(finished_at)). Peak RSS: VmHWM of each worker before it was"
        " stopped. Ratios map/separate > 1: the map took longer / used more memory."
    )
    busy = [r["busy_before"] for r in payload.get("map", {}).get("results", [])]
    if any((b or 0) > BUSY_WARN for b in busy) or (await _busy_cores() or 0) > BUSY_WARN:
        print(
            f"WARNING: other processes kept > {BUSY_WARN} core busy around these measurements;"
            " rerun on a quiet machine before quoting them."
        )
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
