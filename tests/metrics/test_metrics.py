"""Prometheus metrics: ``GET /metrics`` after real runs, HTTP route labels, and a standalone
worker's ``--metrics-port`` server."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from flowyard.api import create_app
from flowyard.bootstrap import Container
from flowyard.settings import Settings
from support.auth import auth_headers
from support.http import RecordingServer, Reply
from support.procs import READY_LINE, flowyard_executable
from support.runs import wait_for_runs

API = "/api/v1"
FAST_RETRY = {
    "max_attempts": 3,
    "initial_interval_s": 0.01,
    "backoff_rate": 1.0,
    "max_interval_s": 0.01,
    "jitter": "none",
}


def hello() -> dict[str, Any]:
    return {
        "name": "hello",
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "greet"},
            {"id": "greet", "type": "set", "config": {"values": {"x": 1}}, "next": "done"},
            {"id": "done", "type": "end"},
        ],
    }


def flaky(url: str) -> dict[str, Any]:
    return {
        "name": "flaky",
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "call"},
            {
                "id": "call",
                "type": "http",
                "config": {"method": "POST", "url": url},
                "retry": FAST_RETRY,
                "next": "done",
            },
            {"id": "done", "type": "end"},
        ],
    }


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition (raises if the text does not parse)."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_reflect_what_ran(container: Container, http_server: RecordingServer) -> None:
    http_server.script("/x", [Reply(503), Reply(200, {"id": 7})])
    app = create_app(container=container)
    transport = httpx.ASGITransport(app=app)
    headers = await auth_headers(container)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers
    ) as client:
        ids = []
        for definition in (hello(), flaky(f"{http_server.url}/x")):
            response = await client.post(f"{API}/workflows", json=definition)
            assert response.status_code == 201, response.text
        for ref in ("hello", "hello", "hello", "flaky"):
            response = await client.post(f"{API}/workflows/{ref}/runs", json={"input": {}})
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        await wait_for_runs(container, ids)
        for run_id in ids:
            response = await client.get(f"{API}/runs/{run_id}")
            assert response.json()["status"] == "succeeded"
        assert (await client.get(f"{API}/runs/no-such-run")).status_code == 404
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = parse(response.text)
    assert value(samples, "flowyard_runs_started_total", workflow="hello") == 3
    assert value(samples, "flowyard_runs_started_total", workflow="flaky") == 1
    assert value(samples, "flowyard_runs_finished_total", status="succeeded") == 4
    assert value(samples, "flowyard_runs_finished_total", status="failed") == 0
    finished = "flowyard_steps_finished_total"
    assert value(samples, finished, node_type="trigger", outcome="succeeded") == 4
    assert value(samples, finished, node_type="set", outcome="succeeded") == 3
    assert value(samples, finished, node_type="end", outcome="succeeded") == 4
    assert value(samples, finished, node_type="http", outcome="retrying") == 1
    assert value(samples, finished, node_type="http", outcome="succeeded") == 1
    assert value(samples, "flowyard_step_retries_total", error_type="http.503") == 1
    assert value(samples, "flowyard_step_duration_seconds_count", node_type="http") == 2
    assert value(samples, "flowyard_claim_duration_seconds_count") >= 1
    assert value(samples, "flowyard_claim_batch_size_sum") == 13  # every step claimed once
    assert value(samples, "flowyard_lease_recoveries_total") == 0
    # The queue-depth gauge is present; every step has ended by now.
    depth = {s.labels["status"]: s.value for s in samples if s.name == "flowyard_queue_depth"}
    assert {"scheduled", "running", "retrying"} <= depth.keys()
    assert depth["scheduled"] == depth["running"] == depth["retrying"] == 0
    assert depth["succeeded"] == 12

    # HTTP metrics are labelled with route templates, never raw ids.
    requests = [s for s in samples if s.name == "flowyard_http_requests_total"]
    routes = {s.labels["route"] for s in requests}
    assert not any(run_id in route for run_id in ids for route in routes)
    started = value(
        requests, "flowyard_http_requests_total",
        method="POST", route=f"{API}/workflows/{{workflow_ref}}/runs", status="202",
    )  # fmt: skip
    assert started == 4, routes
    get_run = {"method": "GET", "route": f"{API}/runs/{{run_id}}"}
    assert value(requests, "flowyard_http_requests_total", **get_run, status="200") == 4
    assert value(requests, "flowyard_http_requests_total", **get_run, status="404") == 1
    count = value(samples, "flowyard_http_request_duration_seconds_count", **get_run)
    assert count == 5


async def test_unmatched_paths_share_one_label_and_pools_are_reported(
    container: Container,
) -> None:
    app = create_app(container=container)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in ("/nope/1", "/nope/2"):
            assert (await client.get(path)).status_code == 404
        samples = parse((await client.get("/metrics")).text)
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert value(samples, "flowyard_http_requests_total", **unmatched) == 2
    sizes = [s for s in samples if s.name == "flowyard_db_pool_size"]
    assert sizes, "no pool gauge"
    assert all(s.value >= 1 for s in sizes)
    assert any(s.name == "flowyard_db_pool_in_use" for s in samples)


async def test_metrics_can_be_disabled(container: Container, settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_enabled": False}), container=container)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200


async def test_standalone_worker_serves_metrics(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'flowyard.db'}"
    log_path = tmp_path / "worker.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWYARD_") or k == "FLOWYARD_SECRET_KEY"
    }
    env.update({"PYTHONUNBUFFERED": "1", "FLOWYARD_LOAD_PLUGINS": "0"})
    args = [flowyard_executable(), "worker", "--db", db, "--metrics-port", "0"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 20
        while READY_LINE not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.05)
        found = re.search(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", log_path.read_text())
        assert found, log_path.read_text()

        def scrape() -> str:
            with urllib.request.urlopen(found.group(1), timeout=5) as response:
                body: bytes = response.read()
            return body.decode()

        samples = parse(await asyncio.to_thread(scrape))
        assert any(s.name == "flowyard_claim_duration_seconds_count" for s in samples)
        assert any(s.name == "flowyard_queue_depth" for s in samples)
        assert not any(s.name.startswith("python_gc") for s in samples)  # private registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 0, log_path.read_text()
