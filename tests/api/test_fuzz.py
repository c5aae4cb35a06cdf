"""A bounded schemathesis run against a real server: no 5xx, every response matches its
documented status, content type and schema (``make fuzz`` runs the long version)."""

from __future__ import annotations

import pytest

from support import fuzz


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation() -> None:
    code = fuzz.main(["--max-examples", "5", "--phases", "examples,fuzzing", "--seed", "1"])
    assert code == 0, "schemathesis found failures; rerun `make fuzz` to see them"
