"""``serve --load-samples`` on a fresh database: every sample is saved, those whose credentials
do not exist yet too (the log names them), and their runs fail with ``credential.not_found``
until the credentials exist; a definition with another problem is still refused."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from flowyard.bootstrap import Container
from flowyard.domain.errors import DefinitionError
from flowyard.domain.statuses import RunStatus
from support.runs import wait_for_runs
from support.samples import EXAMPLES, LEAD_ROUTING, sample


async def test_samples_load_before_their_credentials_exist(
    container: Container, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    samples = tmp_path / "samples"
    shutil.copytree(EXAMPLES, samples, ignore=shutil.ignore_patterns("*.py", "plugin_pack"))
    broken = sample(LEAD_ROUTING) | {"name": "broken", "start": "nowhere"}
    (samples / "zz_broken.json").write_text(json.dumps(broken))
    shipped = sorted(json.loads(p.read_text())["name"] for p in EXAMPLES.glob("*.json"))

    with caplog.at_level(logging.INFO, logger="flowyard"):
        loaded = await container.load_samples(samples)

    assert sorted(loaded) == shipped
    assert {"lead-routing", "campaign-sentiment", "instagram-keywords"} <= set(loaded)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    [lead] = [m for m in warned if LEAD_ROUTING in m]
    assert "no credential named 'salesforce'" in lead and "no credential named 'mail'" in lead
    assert lead.count("'salesforce'") == 1  # three nodes use it: named once
    assert not any("approval.json" in m for m in warned)
    refused = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("zz_broken.json not loaded" in m for m in refused)

    # The API still refuses a definition that names a credential that does not exist.
    with pytest.raises(DefinitionError) as caught:
        await container.service.create_workflow(sample(LEAD_ROUTING) | {"name": "by-hand"})
    assert {p.code for p in caught.value.problems} == {"unknown_credential"}

    run, _ = await container.service.start_run("lead-routing", {"email": "a@b.c", "region": "West"})
    await wait_for_runs(container, [run.id])
    detail = await container.service.get_run(run.id)
    assert detail.run.status is RunStatus.FAILED
    assert detail.cause is not None and detail.cause.node_id == "assign_pool"
    assert detail.cause.error is not None
    assert detail.cause.error["type"] == "credential.not_found"
