"""Fixtures of the CLI suites."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The commands' working directory (keeps any default ./flowyard.db out of the repo)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite database file for the commands."""
    return f"sqlite:///{tmp_path / 'cli.db'}"
