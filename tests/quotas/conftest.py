"""Fixtures of the quota CLI tests (as tests/cli/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The subprocesses' working directory (keeps any default ./flowyard.db out of the repo)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite database file for the subprocesses."""
    return f"sqlite:///{tmp_path / 'cli.db'}"
