"""Draft edit latency at size: one edit of a 100- and a 1,000-node draft, with its validation.

In-process through the service (what the API and the CLI call) on a fresh SQLite file
(WAL, as served). A draft of N nodes is a chain of ``log`` nodes whose messages are templates
reading the previous node (``{{ steps.n41.output }}``), with a condition every tenth node
(a real workload for validation: N templates and N/10 conditions). Measured per edit kind,
each repeated ``--edits`` times on the same draft:

- *add*: ``add_node`` of a new log node at the end,
- *patch*: ``update_node`` (merge patch of a node's config),
- *undo* / *redo*: the last step undone then redone.

Each number is the whole use case: read the draft, apply the patch and derive its inverse,
record the document and the step (one transaction), validate the new draft. The peer,
measured in the same run: one *cold* validation of the same definition (a fresh expression
engine: every template compiled) and one *warm* one (the compiled cache full), which is the
floor of an edit that validates the whole draft.

    python bench/drafts.py                      # 100 and 1,000 nodes, 50 edits each
    python bench/drafts.py --nodes 1000 --edits 20 --profile 25
    python bench/drafts.py --json out.json

``--http``: the same over HTTP, as a builder sees it: one ``flowyard serve`` process (its
SQLite file, rate limits off, no in-process worker, plugins off) on loopback, and one
client (httpx, one kept-alive connection) logged in as the admin, each request with the
``If-Match`` of the answer before. Kinds: *add* (``POST .../draft/nodes``), *patch*
(``PATCH .../draft/nodes/n5``), *rename* (``POST .../nodes/{id}/rename`` of a node in the
middle of the chain, which moves its ``next`` and the template that reads it), *connect*
(``POST .../draft/edges``: the added node's ``next``, to the chain's last node), *connect_path*
(a ``catch`` route from a node the start reaches to the added node: the reachable graph
grows, no cycle closes), *json_patch*
(``PATCH .../draft``, one ``replace``), *undo*, *redo*. ``--minimal`` sends ``Prefer:
return=minimal`` (the answer without the document: what a builder that already holds it
needs).

    python bench/drafts.py --http --nodes 1000 --edits 50
    python bench/drafts.py --http --minimal --nodes 1000

The machine's load (``uptime``) is printed with the numbers: on a shared machine compare
the ratios of one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))  # the benches' shared serve and login

from flowyard.bootstrap import Container, build
from flowyard.drafts import ops
from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine
from flowyard.service.drafts import EditBuilder
from flowyard.settings import Settings


def definition(size: int) -> dict[str, Any]:
    """A chain of ``size`` nodes: logs reading the previous node, a condition every tenth."""
    nodes: list[dict[str, Any]] = [{"id": "n0", "type": "trigger", "next": "n1"}]
    for i in range(1, size):
        following = f"n{i + 1}" if i + 1 < size else None
        node: dict[str, Any]
        if i % 10 == 0 and following is not None:
            node = {
                "id": f"n{i}",
                "type": "condition",
                "config": {
                    "cases": [{"when": f"steps.n{i - 1}.output != 'x{i}'", "next": following}],
                    "default": following,
                },
            }
        else:
            node = {
                "id": f"n{i}",
                "type": "log",
                "config": {"message": f"{{{{ steps.n{i - 1}.output }}}} {i}"},
            }
            if following is not None:
                node["next"] = following
        nodes.append(node)
    return {"name": f"bench-{size}", "start": "n0", "nodes": nodes}


def adding(node: dict[str, Any]) -> EditBuilder:
    """An edit that adds ``node``."""
    return lambda doc, refs: ops.add_node(doc, node)


def patching(patch: dict[str, Any]) -> EditBuilder:
    """An edit that merge-patches node ``n5``."""
    return lambda doc, refs: ops.update_node(doc, "n5", patch)


def summary(samples: list[float]) -> dict[str, float]:
    """p50 / p99 / max in ms."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def timed(fn: Callable[[], Awaitable[Any]], cpu: list[float]) -> float:
    """Wall time of ``fn()``; its CPU time (the process's, threads included) into ``cpu``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    await fn()
    cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start


async def measure(container: Container, size: int, edits: int) -> dict[str, Any]:
    """Every edit kind ``edits`` times on one draft of ``size`` nodes, and the peer."""
    service = container.service
    raw = definition(size)
    view = await service.create_draft_workflow(raw, "bench")
    assert not view.problems, view.problems[:3]
    name = raw["name"]
    times: dict[str, list[float]] = {"add": [], "patch": [], "undo": [], "redo": []}
    cpu: dict[str, list[float]] = {kind: [] for kind in times}
    for i in range(edits):
        new = {"id": f"extra{i}", "type": "log", "config": {"message": "{{ input.x }}"}}
        patch = {"config": {"message": f"{{{{ steps.n{i}.output }}}} patched {i}"}}
        edit = functools.partial(service.edit_draft, name, None, actor="bench")
        move = functools.partial(service.move_draft, name, None, actor="bench")
        steps = {
            "add": functools.partial(edit, build=adding(new)),
            "patch": functools.partial(edit, build=patching(patch)),
            "undo": functools.partial(move, which="undo"),
            "redo": functools.partial(move, which="redo"),
        }
        for kind, step in steps.items():
            times[kind].append(await timed(step, cpu[kind]))
    document = (await service.get_draft(name)).draft.document["definition"]
    registry = container.validator.registry
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(3):
        validator = DefinitionValidator(registry, ExpressionEngine())
        start = time.perf_counter()
        validator.validate(document)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        validator.validate(document)
        warm.append(time.perf_counter() - start)
    result: dict[str, Any] = {k: summary(v) for k, v in times.items()}
    for kind, samples in cpu.items():
        result[kind]["cpu_p50_ms"] = round(statistics.median(samples) * 1000, 2)
    result["validate_cold"] = summary(cold)
    result["validate_warm"] = summary(warm)
    result["edit_over_warm_validation"] = round(
        result["patch"]["p50_ms"] / max(result["validate_warm"]["p50_ms"], 0.001), 2
    )
    return result


async def profile(container: Container, size: int, edits: int, top: int) -> str:
    """cProfile of ``edits`` patch edits of a ``size``-node draft: the top by cumulative time."""
    service = container.service
    raw = definition(size)
    raw["name"] = f"profiled-{size}"
    await service.create_draft_workflow(raw, "bench")
    profiler = cProfile.Profile()
    for i in range(edits):
        patch = {"config": {"message": f"{{{{ steps.n{i}.output }}}} p {i}"}}
        profiler.enable()
        await service.edit_draft(raw["name"], None, patching(patch), "bench")
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    return text.getvalue()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            db_url=f"sqlite:///{Path(tmp) / 'drafts.db'}", workers=0, load_plugins=False
        )
        container = await build(settings)
        container.service.changes.enable()  # as served: an API process hears the others
        try:
            results = {str(size): await measure(container, size, args.edits) for size in args.nodes}
            if args.profile:
                print(await profile(container, max(args.nodes), args.edits, args.profile))
        finally:
            await container.close()
    return {"load": os.getloadavg(), "edits": args.edits, "results": results}


def server_cpu_ns(pid: int) -> int:
    """CPU time the server process has used, in ns, all its threads (Linux schedstat: exact,
    where /proc/PID/stat counts 10 ms ticks); 0 where there is no /proc."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that ended meanwhile
    except OSError:
        return 0
    return total


async def http_measure(
    http: httpx.AsyncClient, size: int, edits: int, minimal: bool, pid: int
) -> dict[str, Any]:
    """Every edit kind ``edits`` times over HTTP on one draft of ``size`` nodes; with each
    the server's CPU time for it (less sensitive to a loaded machine than wall time)."""
    raw = {**definition(size), "draft": True}
    created = await http.post("/api/v1/workflows", json=raw)
    created.raise_for_status()
    draft = f"/api/v1/workflows/{raw['name']}/draft"
    tag = created.headers["ETag"]
    prefer = {"Prefer": "return=minimal"} if minimal else {}
    kinds = ("add", "patch", "rename", "connect", "connect_path", "json_patch", "undo", "redo")
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    sizes: dict[str, list[int]] = {kind: [] for kind in kinds}
    middle = size // 2
    reads_input = "{{ input.x }}"
    for i in range(edits):
        old, new = (f"n{middle}", f"m{middle}") if i % 2 == 0 else (f"m{middle}", f"n{middle}")
        requests: dict[str, tuple[str, str, dict[str, Any]]] = {
            "add": (
                "POST",
                "/nodes",
                {"node": {"id": f"extra{i}", "type": "log", "config": {"message": reads_input}}},
            ),
            "patch": (
                "PATCH",
                "/nodes/n5",
                {"config": {"message": f"{{{{ steps.n4.output }}}} patched {i}"}},
            ),
            "rename": ("POST", f"/nodes/{old}/rename", {"id": new}),
            "connect": (
                "POST",
                "/edges",
                {"source": f"extra{i}", "target": f"n{size - 1}", "kind": "next"},
            ),
            # An edge from a node the start reaches: the added node joins the graph.
            "connect_path": (
                "POST",
                "/edges",
                {"source": f"n{3 + i}", "target": f"extra{i}", "kind": "catch"},
            ),
            "json_patch": (
                "PATCH",
                "",
                [{"op": "replace", "path": "/definition/nodes/7/config/message", "value": f"j{i}"}],
            ),
            "undo": ("POST", "/undo", {}),
            "redo": ("POST", "/redo", {}),
        }
        for kind, (method, path, body) in requests.items():
            headers = {"If-Match": tag, **prefer}
            used = server_cpu_ns(pid)
            start = time.perf_counter()
            answer = await http.request(
                method, draft + path, json=body if body else None, headers=headers
            )
            elapsed = time.perf_counter() - start
            cpu[kind].append((server_cpu_ns(pid) - used) / 1e9)
            if answer.status_code != 200:
                raise RuntimeError(f"{kind}: {answer.status_code} {answer.text[:300]}")
            tag = answer.headers["ETag"]
            times[kind].append(elapsed)
            sizes[kind].append(len(answer.content))
    result: dict[str, Any] = {kind: summary(samples) for kind, samples in times.items()}
    for kind in kinds:
        result[kind]["server_cpu_p50_ms"] = round(statistics.median(cpu[kind]) * 1000, 2)
        result[kind]["answer_bytes"] = int(statistics.median(sizes[kind]))
    return result


async def http_main(args: argparse.Namespace) -> dict[str, Any]:
    """Serve a fresh SQLite file and measure over loopback."""
    from actions import PASSWORD, free_port, ready, serve  # the benches' shared serve/login
    from harness import stop

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        log = workdir / "serve.log"
        port = free_port()
        os.environ["FLOWYARD_WORKERS"] = "0"  # edits only: no idle worker polling beside them
        procs = serve(f"sqlite:///{workdir / 'drafts.db'}", port, workdir, log)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                await ready(http, procs, log)
                token = await http.post(
                    "/api/v1/auth/token", data={"username": "admin", "password": PASSWORD}
                )
                token.raise_for_status()
                http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
                if args.pid_file:  # for a profiler to attach to (py-spy record --pid)
                    args.pid_file.write_text(str(procs[0].pid))
                    await asyncio.sleep(3)
                pid = procs[0].pid
                results = {
                    str(size): await http_measure(http, size, args.edits, args.minimal, pid)
                    for size in args.nodes
                }
        finally:
            stop(procs)
    return {
        "mode": "http" + (" (Prefer: return=minimal)" if args.minimal else ""),
        "load": os.getloadavg(),
        "edits": args.edits,
        "results": results,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--profile", type=int, default=0, help="print the top N of a cProfile")
    parser.add_argument("--http", action="store_true", help="over HTTP: a real flowyard serve")
    parser.add_argument("--minimal", action="store_true", help="--http: Prefer: return=minimal")
    parser.add_argument(
        "--pid-file", type=Path, help="--http: write serve's pid here, wait 3 s, then measure"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    report = asyncio.run(http_main(args) if args.http else main(args))
    print(f"load average {report['load']}")
    for size, result in report["results"].items():
        print(f"{size} nodes:")
        for kind, numbers in result.items():
            print(f"  {kind:28} {numbers}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    cli()
