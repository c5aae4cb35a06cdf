"""The exported JSON Schema is current and describes the samples."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from flowyard.domain.state_machine import definition_json_schema

ROOT = Path(__file__).parents[2]


def test_exported_schema_is_current() -> None:
    exported = json.loads((ROOT / "schema" / "workflow.schema.json").read_text())
    assert exported == definition_json_schema(), "run `make schema` and commit the result"


@pytest.mark.parametrize("sample", sorted((ROOT / "examples").glob("*.json")), ids=lambda p: p.name)
def test_samples_match_the_schema(sample: Path) -> None:
    jsonschema.Draft202012Validator(definition_json_schema()).validate(
        json.loads(sample.read_text())
    )
