"""Blocks of the docs that quote the code, generated from it so they cannot drift.

A block is ``<!-- code: NAME -->`` ... ``<!-- /code -->`` in a Markdown file; its body is
what ``BLOCKS[NAME]()`` returns. ``make docs`` rewrites them; ``tests/unit/test_docblocks.py``
fails when one is stale.

    python -m support.docblocks          # rewrite (run from tests/, or PYTHONPATH=tests)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.dialects import postgresql

from flowyard.domain.records import step_idempotency_key
from flowyard.store.claim import claim_statement
from flowyard.store.schema import CLAIMABLE_SQL

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "architecture.md", *sorted((ROOT / "docs" / "decisions").glob("*.md"))]
BLOCK = re.compile(r"(<!-- code: ([a-z-]+) -->\n)(.*?)(<!-- /code -->)", re.S)


def claim_sql() -> str:
    """The claim statement as PostgreSQL receives it."""
    stmt = claim_statement("w", limit=100, now=datetime(2026, 1, 1, tzinfo=UTC), lease_s=30)
    sql = " ".join(str(stmt.compile(dialect=postgresql.dialect())).split())
    sql = re.sub(r"RETURNING .*", "RETURNING steps.*", sql)
    for word in ("SET", "WHERE", "FROM", "ORDER BY", "LIMIT", "RETURNING"):
        sql = sql.replace(f" {word} ", f"\n  {word} ")
    sql = re.sub(r"(SET .*?)\n", lambda m: m.group(1).replace(", ", ",\n      ") + "\n", sql)
    return f"```sql\n{sql}\n```\n"


def claimable_predicate() -> str:
    """The claim predicate, also the partial index ``ix_steps_claimable``'s."""
    return f"`{CLAIMABLE_SQL}`\n"


def step_key() -> str:
    """The idempotency key of a step, on the main path and in a branch."""
    main = step_idempotency_key("<run_id>", "", "<node_id>", "<iteration>")
    branch = step_idempotency_key("<run_id>", "<branch>", "<node_id>", "<iteration>")
    return f"`{main}` on the main path, `{branch}` in a branch\n"


BLOCKS: dict[str, Callable[[], str]] = {
    "claim-sql": claim_sql,
    "claimable-predicate": claimable_predicate,
    "step-key": step_key,
}


def render(text: str) -> str:
    """``text`` with every block regenerated (KeyError for an unknown block name)."""
    return BLOCK.sub(lambda m: m.group(1) + BLOCKS[m.group(2)]() + m.group(4), text)


def main() -> int:
    for path in DOCS:
        text = path.read_text()
        fresh = render(text)
        if fresh != text:
            path.write_text(fresh)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
