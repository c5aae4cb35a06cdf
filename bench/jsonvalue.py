"""Strict JSON costs: each of flowyard.domain.jsonvalue's entry points against the plain
``json`` call it replaces or adds to, on the same documents in the same run.

- *read* (every JSON column of every row the store reads): ``loads_stored`` vs
  ``json.loads`` (SQLAlchemy's default deserializer, used before).
- *edge* (request bodies, CLI files): ``jsonvalue.loads`` vs ``json.loads`` (what Starlette's
  ``Request.json`` does).
- *step* (every step result, in the worker): ``jsonvalue.problems`` (the walk of
  ``worker.storable`` on a good value) vs ``json.dumps`` (the encoding the store does at
  commit anyway).
- *repair* (only rows an older version broke): ``loads_stored`` on a bad document vs
  ``json.loads`` of it.

Documents: a run input (81 B), an HTTP response (37 KB), a list of 8,000 records (750 KB,
more brackets than the depth limit, so the edge walks it), 5,000 floats, unicode text.
Median of ``--repeat`` rounds, each timing ``--number`` calls (best effort on a shared
machine: the ratio is the result, both sides run interleaved).

    python bench/jsonvalue.py
    python bench/jsonvalue.py --repeat 9 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))

from flowyard.domain import jsonvalue


def documents() -> dict[str, Any]:
    """The values measured, by name."""
    return {
        "run input": {"email": "lead@example.com", "region": "East Coast", "n": 3, "tags": ["a"]},
        "http 37KB": {
            "status": 200,
            "headers": {"content-type": "application/json"},
            "body": {"results": [{"k": "v" * 20, "n": i, "sub": {"z": [i]}} for i in range(600)]},
        },
        "records 750KB": [
            {"id": i, "name": f"item {i}", "tags": ["a", "b"], "nested": {"x": i, "y": [1, 2]}}
            for i in range(8000)
        ],
        "floats": [i * 0.25 for i in range(5000)],
        "unicode": {"t": "héllo wörld ✓ " * 100, "u": ["ü", "\U0001f600"] * 100},
    }


def timed(fn: Callable[[], object], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - started) / number


def compare(
    ours: Callable[[], object], peer: Callable[[], object], repeat: int, number: int
) -> tuple[float, float]:
    """Median seconds per call of ``ours`` and ``peer``, measured in alternation."""
    a, b = [], []
    for _ in range(repeat):
        a.append(timed(ours, number))
        b.append(timed(peer, number))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    """Measure and print a table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for name, value in documents().items():
        text = json.dumps(value)
        number = max(3, min(2000, 2_000_000 // len(text)))
        cases = {
            "read": (lambda t=text: jsonvalue.loads_stored(t), lambda t=text: json.loads(t)),
            "edge": (lambda t=text: jsonvalue.loads(t), lambda t=text: json.loads(t)),
            "step": (lambda v=value: jsonvalue.problems(v), lambda v=value: json.dumps(v)),
        }
        for kind, (ours, peer) in cases.items():
            mine, theirs = compare(ours, peer, args.repeat, number)
            rows.append((name, len(text), kind, mine, theirs))
    bad = json.dumps({"s": "a\ud800", "n": float("nan"), "rows": documents()["http 37KB"]})
    mine, theirs = compare(
        lambda: jsonvalue.loads_stored(bad), lambda: json.loads(bad), args.repeat, 200
    )
    rows.append(("bad row 37KB", len(bad), "repair", mine, theirs))

    print(f"{'document':16} {'bytes':>8} {'path':6} {'ours':>10} {'peer':>10} {'ratio':>6}")
    for name, size, kind, mine, theirs in rows:
        print(
            f"{name:16} {size:>8} {kind:6} {mine * 1e6:>8.1f}us {theirs * 1e6:>8.1f}us "
            f"{mine / theirs:>6.2f}"
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [
                    {"document": n, "bytes": s, "path": k, "ours_s": m, "peer_s": t}
                    for n, s, k, m, t in rows
                ],
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
