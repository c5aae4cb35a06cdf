"""What the expression budget costs on normal templates: this tree's engine against the engine
of a base revision (default ``89f72e2``, before the deep size checks), measured in the same
run, on the same inputs.

The base engine is read from git (``git show <rev>:src/flowyard/expressions/*.py``) into a
temporary package, so both run in one process. Each case is one call of the engine on a
warm compile cache (the way a worker evaluates a stored workflow): microseconds per call,
the best of 15 samples of ~40 ms, the samples of the two engines alternating so a change of
machine load hits both alike. Compile cost is timed too (distinct sources, cold cache).
Cases: conditions and templates a lead-routing or campaign workflow writes, a node config
rendered as a whole, loops over a 200-record step output, serialising it, and lookups into
a 100,000-element step output (which the budget must not size).

    python bench/expressions.py                 # ~1 min on 2 cores
    python bench/expressions.py --base HEAD~3 --json out.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowyard.expressions import ExpressionEngine as CurrentEngine

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "src/flowyard/expressions"


def base_engine_class(rev: str, workdir: Path) -> Any:
    """The ``ExpressionEngine`` class of ``rev``, imported from a copy of its files."""
    package = workdir / "base_expressions"
    package.mkdir()
    # The base revision's own package files (a later revision has more modules).
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:{PACKAGE}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in (n for n in names if n.endswith(".py")):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{PACKAGE}/{name}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (package / name).write_text(source)
    sys.path.insert(0, str(workdir))
    return importlib.import_module("base_expressions").ExpressionEngine


def scope() -> dict[str, Any]:
    """A run scope: a lead input, vars, and step outputs of the sizes workflows see."""
    records = [
        {"id": i, "name": f"customer {i}", "email": f"c{i}@example.com", "score": i * 0.5}
        for i in range(200)
    ]
    return {
        "input": {
            "email": "lead@example.com",
            "name": "Ada Lovelace",
            "region": "East Coast",
            "tags": ["vip", "new", "q3"],
            "message": "I would like a refund for order 1234, please.",
        },
        "vars": {"east_manager": "005A0000001", "base_url": "https://api.example.com"},
        "steps": {
            "fetch": {
                "output": {
                    "id": 7,
                    "status": 200,
                    "body": {"fields": dict.fromkeys("abcdefghij", "x" * 20)},
                }
            },
            "list": {"output": {"items": records}},
            "big": {"output": list(range(100_000))},
        },
        "run": {"id": "run_01", "workflow_name": "lead-routing"},
    }


CONDITIONS = {
    "condition: ==": "input.region == 'East Coast'",
    "condition: in + and": "'refund' in input.message and 'vip' in input.tags",
    "condition: step output": "steps.fetch.output.status == 200",
}
TEMPLATES = {
    "text: Hello {{ name }}": "Hello {{ input.name }}, welcome!",
    "native: {{ steps.x.output.id }}": "{{ steps.fetch.output.id }}",
    "native: a step output (dict)": "{{ steps.fetch.output }}",
    "text: url": "{{ vars.base_url }}/leads/{{ steps.fetch.output.id }}?t={{ input.tags | first }}",
    "join tags": "{{ input.tags | join(', ') }}",
    "loop: 200 records": (
        "{% for r in steps.list.output['items'] %}{{ r.name }}: {{ r.email }}\n{% endfor %}"
    ),
    "map | list: 200 ids": "{{ steps.list.output['items'] | map(attribute='id') | list }}",
    "tojson: 200 records": "{{ steps.list.output['items'] | tojson }}",
    "lookup: length of 100k list": "{{ steps.big.output | length }}",
    "lookup: item of 100k list": "{{ steps.big.output[99999] }}",
}
NODE_CONFIG = {
    "Email": "{{ input.email }}",
    "LastName": "{{ input.name.split(' ') | last }}",
    "OwnerId": "{{ vars.east_manager }}",
    "Description": "Lead from {{ input.region }}: {{ input.message | truncate(30) }}",
    "Tags": "{{ input.tags }}",
}


def paired_us(base: Callable[[], Any], current: Callable[[], Any]) -> tuple[float, float]:
    """Microseconds per call of each, best of 15 samples of ~40 ms taken alternately, so a
    change of machine load during the run hits both sides alike."""
    number = max(1, timeit.Timer(current).autorange()[0] // 5)
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(15):
        for side, fn in enumerate((base, current)):
            samples[side].append(timeit.Timer(fn).timeit(number) / number * 1e6)
    return min(samples[0]), min(samples[1])


def cases(engine: Any, values: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """One callable per case, on ``engine`` (warm: each source compiled once first)."""
    made: dict[str, Callable[[], Any]] = {}
    for name, source in CONDITIONS.items():
        engine.test(source, values)
        made[name] = lambda s=source: engine.test(s, values)
    for name, source in TEMPLATES.items():
        engine.render(source, values)
        made[name] = lambda s=source: engine.render(s, values)
    engine.render_value(NODE_CONFIG, values)
    made["node config: 5 templates"] = lambda: engine.render_value(NODE_CONFIG, values)
    return made


def paired_compile_us(base_class: Any, current_class: Any, count: int = 100) -> tuple[float, float]:
    """Microseconds to compile one small template on a cold cache (distinct sources), best
    of 15 alternating batches of ``count`` per engine."""
    samples: tuple[list[float], list[float]] = ([], [])
    for attempt in range(15):
        for side, engine_class in enumerate((base_class, current_class)):
            engine = engine_class()
            sources = [f"{{{{ steps.s{attempt}_{i}.output.v + {i} }}}}" for i in range(count)]
            started = timeit.default_timer()
            for source in sources:
                engine.check_template(source)
            samples[side].append((timeit.default_timer() - started) / count * 1e6)
    return min(samples[0]), min(samples[1])


def main(argv: list[str] | None = None) -> None:
    """Run every case on both engines and print a Markdown table (ratio = this / base)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="89f72e2", help="git revision of the base engine")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base_class = base_engine_class(args.base, Path(tmp))
        values = scope()
        current, base = CurrentEngine(), base_class()
        rows = []
        for (name, now), (_, then) in zip(
            cases(current, values).items(), cases(base, values).items(), strict=True
        ):
            base_us, current_us = paired_us(then, now)
            rows.append({"case": name, "base_us": base_us, "current_us": current_us})
        base_us, current_us = paired_compile_us(base_class, CurrentEngine)
        rows.append(
            {
                "case": "compile one small template (cold)",
                "base_us": base_us,
                "current_us": current_us,
            }
        )
    print(f"| case | base {args.base} µs | this tree µs | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        ratio = row["current_us"] / row["base_us"]
        print(f"| {row['case']} | {row['base_us']:.1f} | {row['current_us']:.1f} | {ratio:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"base": args.base, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
