"""``flowyard doctor`` against real metrics endpoints: a database with due steps and no
worker, a quiet one, and endpoints that are not flowyard's."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from prometheus_client import start_http_server

from flowyard.bootstrap import Container
from flowyard.observability import Metrics
from flowyard.settings import Settings
from support.cli import cli
from support.clock import FakeClock
from support.harness import built


@contextlib.contextmanager
def serving(metrics: Metrics) -> Iterator[str]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_due_steps_without_a_worker_are_diagnosed(settings: Settings, tmp_path: Path) -> None:
    clock = FakeClock()
    async with built(settings, clock) as container:
        await start_runs(container, 3)
        clock.advance(90)  # nobody claimed them for a minute and a half
        await container.metrics.refresh_queue_depth(container.admin.queue_health, max_age_s=0)
        with serving(container.metrics) as url:
            result = cli(tmp_path, "doctor", url, "--interval", "1")
    assert result.returncode == 1, result.stderr
    assert "Steps are due and no worker claims them" in result.stdout
    assert "3 steps due, the oldest for 90 s" in result.stdout
    assert "fix: start workers" in result.stdout


async def test_a_quiet_deployment_is_fine(settings: Settings, tmp_path: Path) -> None:
    async with built(settings, FakeClock()) as container:
        await container.metrics.refresh_queue_depth(container.admin.queue_health, max_age_s=0)
        with serving(container.metrics) as url:
            result = cli(tmp_path, "doctor", url, "--interval", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "No problem found."


class _NotMetrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 401 if self.path == "/locked" else 200
        body = b"<html>hello</html>"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_what_is_not_a_flowyard_metrics_page_is_one_line(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _NotMetrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        for path, expected in (
            ("/metrics", "is not a Prometheus metrics page"),
            ("/locked", "answered 401 (a viewer token: --token)"),
        ):
            result = cli(tmp_path, "doctor", base + path, "--interval", "1")
            assert result.returncode == 1
            assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    finally:
        server.shutdown()
        server.server_close()
    refused = cli(tmp_path, "doctor", base + "/metrics", "--interval", "1")
    assert refused.returncode == 1 and "cannot read" in refused.stderr


async def start_runs(container: Container, count: int) -> None:
    definition = {
        "name": "due",
        "start": "a",
        "nodes": [{"id": "a", "type": "set", "config": {"values": {"x": 1}}}],
    }
    record, _, _ = await container.service.save_workflow(definition)
    for n in range(count):
        await container.service.start_run(record.id, {"n": n})
