"""The example node pack, installed by pip and loaded by a real ``flowyard serve`` through
its entry point: its type is served with its JSON Schemas, a workflow using it runs to the
end against a local Discord, its error types route; two packs that cannot load are reported
(at start and by ``GET /api/v1/plugins``) and the service runs without them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugins.conftest import EXAMPLE_PACK, load_fake_discord
from support.procs import flowyard_executable
from support.serve import serve_process

API = "/api/v1"
BOT_TOKEN = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.GxYz12.suite-bot-token-0123456789"
CHANNEL, LOCKED = "1100000000000000100", "1100000000000000200"

pytestmark = pytest.mark.slow


def discord_node(channel: str, content: str = "Lead: {{ input.email }}", **more: Any) -> Any:
    return {
        "id": "notify",
        "type": "example.discord",
        "config": {"credential": "discord-bot", "channel_id": channel, "content": content, **more},
        "retry": {"max_attempts": 1},
        "catch": [{"errors": ["discord.50013", "discord.10003"], "next": "fallback"}],
        "next": "done",
    }


async def wait_for_run(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        run: dict[str, Any] = (await client.get(f"{API}/runs/{run_id}")).json()
        if run["status"] in ("succeeded", "failed", "cancelled", "timed_out"):
            return run
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.1)


async def test_serve_loads_the_pack_runs_its_node_and_reports_the_broken_ones(
    tmp_path: Path, plugin_path: Path
) -> None:
    testing = load_fake_discord()
    env = {
        "PYTHONPATH": str(plugin_path),
        "FLOWYARD_LOAD_PLUGINS": "true",
        "FLOWYARD_EGRESS_ALLOW": "127.0.0.1",
    }
    with (
        testing.FakeDiscord(
            {BOT_TOKEN}, [testing.Channel(CHANNEL), testing.Channel(LOCKED, can_send=False)]
        ) as discord,
        serve_process(f"sqlite:///{tmp_path / 'f.db'}", tmp_path / "serve.log", env) as server,
    ):
        await server.wait_ready()
        log = server.log()
        # One line at start for each pack: loaded with its types, or failed with why.
        assert "node pack example (flowyard-example-pack 0.1.0) loaded: example.discord" in log
        assert (
            "node pack broken (flowyard-broken-pack 0.0.1) failed to load and is skipped (the "
            "service runs without it; GET /api/v1/plugins): ModuleNotFoundError: No module "
            "named 'flowyard_no_such_sdk'"
        ) in log
        assert "node pack clash (flowyard-clash-pack 0.0.1) failed to load" in log
        # Loaded once: the preflight's registry is the app's.
        assert log.count("node pack broken") == 1

        headers = {"Authorization": f"Bearer {await server.login()}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            types = (await client.get(f"{API}/node-types", params={"limit": 500})).json()
            by_name = {t["type"]: t for t in types["items"]}
            discord_type = by_name["example.discord"]
            assert {"credential", "channel_id", "content"} <= set(
                discord_type["config_schema"]["properties"]
            )
            assert set(discord_type["output_schema"]["properties"]) == {
                "id",
                "channel_id",
                "timestamp",
            }
            # The clashing pack took nothing: not its own type, not flowyard's slack.
            assert "clash.shout" not in by_name
            assert by_name["slack"]["description"].startswith("Posts a Slack message")

            plugins = (await client.get(f"{API}/plugins")).json()["items"]
            report = {p["name"]: p for p in plugins}
            assert report["example"] == {
                "name": "example",
                "value": "flowyard_example_pack:register",
                "distribution": "flowyard-example-pack",
                "version": "0.1.0",
                "status": "loaded",
                "types": ["example.discord"],
                "error": None,
            }
            assert report["broken"]["status"] == "failed"
            assert report["broken"]["error"] == (
                "ModuleNotFoundError: No module named 'flowyard_no_such_sdk'"
            )
            assert report["clash"]["status"] == "failed"
            assert report["clash"]["error"].startswith(
                "PackRefused: node type 'slack' is already registered (by the pack "
                "integrations (flowyard "
            )
            assert report["integrations"]["status"] == "loaded"
            # flowyard's own pack loads before any other.
            assert plugins[0]["name"] == "integrations"

            created = await client.post(
                f"{API}/credentials",
                json={
                    "name": "discord-bot",
                    "type": "api_key_header",
                    "data": {"header": "Authorization", "value": f"Bot {BOT_TOKEN}"},
                    "allowed_origins": [discord.origin],
                },
            )
            assert created.status_code == 201, created.text
            definition = {
                "name": "lead-to-discord",
                "start": "notify",
                "nodes": [
                    discord_node("{{ input.channel }}", api_base=discord.api_base),
                    {"id": "done", "type": "end", "config": {"output": "posted"}},
                    {"id": "fallback", "type": "end", "config": {"output": "fallback"}},
                ],
            }
            saved = await client.post(f"{API}/workflows", json=definition)
            assert saved.status_code == 201, saved.text
            results = {}
            for channel in (CHANNEL, LOCKED):
                started = await client.post(
                    f"{API}/workflows/lead-to-discord/runs",
                    json={"input": {"email": "ada@example.com", "channel": channel}},
                )
                assert started.status_code == 202, started.text
                results[channel] = await wait_for_run(client, started.json()["id"])
            steps = (await client.get(f"{API}/runs/{results[LOCKED]['id']}/steps")).json()

    # It ran: the message is in Discord, the run went on to its next node.
    assert (results[CHANNEL]["status"], results[CHANNEL]["output"]) == ("succeeded", "posted")
    [message] = discord.messages
    assert (message.channel_id, message.content) == (CHANNEL, "Lead: ada@example.com")
    # Its error type routes: Discord's "Missing Permissions" took the catch route.
    assert (results[LOCKED]["status"], results[LOCKED]["output"]) == ("succeeded", "fallback")
    notify = next(s for s in steps["items"] if s["node_id"] == "notify")
    assert (notify["error"]["type"], notify["error"]["transient"]) == ("discord.50013", False)


def test_a_disabled_pack_is_named_and_its_type_unknown(tmp_path: Path, plugin_path: Path) -> None:
    definition = tmp_path / "wf.json"
    definition.write_text(
        '{"name": "d", "start": "notify", "nodes": [{"id": "notify", "type": '
        '"example.discord", "config": {}}]}'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWYARD_")}
    env.update(
        {
            "PYTHONPATH": str(plugin_path),
            "FLOWYARD_LOAD_PLUGINS": "false",
            "FLOWYARD_SECRET_KEY": os.environ["FLOWYARD_SECRET_KEY"],
        }
    )
    done = subprocess.run(
        [flowyard_executable(), "validate", str(definition), "--db", f"sqlite:///{tmp_path}/v.db"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert (
        "flowyard: node pack example (flowyard-example-pack 0.1.0) is installed but not loaded "
        "(FLOWYARD_LOAD_PLUGINS is false)"
    ) in done.stderr
    assert "/nodes/0/type: unknown node type 'example.discord'" in done.stderr


def test_the_pack_passes_its_own_tests(plugin_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWYARD_")}
    env["PYTHONPATH"] = str(plugin_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "tests"],
        cwd=EXAMPLE_PACK,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "failed" not in done.stdout
