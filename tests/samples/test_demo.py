"""``make demo`` (examples/demo.py) passes: the fakes, a real ``flowyard serve`` subprocess,
the three samples over the API, and its own check list."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support.samples import EXAMPLES


@pytest.mark.slow
def test_the_demo_passes_and_says_what_happened() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.rstrip().endswith("demo passed")
    assert "FAIL" not in out
    assert out.count("salesforce.server_unavailable -> retry in") == 2
    assert "create_lead      failed     salesforce.duplicates_detected" in out
    for outcome in (
        '"action": "updated"',
        '"route": "pool"',
        '"outcome": "sales_task"',
        '"outcome": "support_case"',
        '"action": "dm"',
        '"action": "like"',
    ):
        assert outcome in out
    assert "SMTP relay: 5 message(s)" in out
    # Secrets the demo gave the server never come back in what it prints.
    assert "demo-client-secret" not in out and "EAAdemoGraphAccessToken" not in out
