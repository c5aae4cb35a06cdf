"""``make demo``: the three provider samples, end to end, against local fakes.

    make demo                     # or: .venv/bin/python examples/demo.py [--keep]

What it does, all on 127.0.0.1 and in a temporary directory:

1. starts the fakes of the test suite (tests/fakes/): Salesforce (OAuth token endpoint and
   REST API), an SMTP relay (aiosmtpd) and the Meta Graph API;
2. starts ``flowyard serve`` on a fresh SQLite database, its egress allowed to the fakes'
   ports only (``FLOWYARD_EGRESS_ALLOW``);
3. logs in, creates the credentials the samples name (``salesforce``, ``mail``,
   ``instagram``) and the three workflows over the API;
4. routes three leads (examples/lead_routing.json): an East Coast lead whose Salesforce create
   gets a 503 twice and is retried, a duplicate that updates the existing lead, and a West
   lead for the general pool; plays the campaign (examples/campaign_sentiment.json) with a
   positive and a negative reply; sends two Instagram comments
   (examples/instagram_keywords.json), one with a keyword and one without;
5. prints each run (status, steps, output), what each fake received, and a check list.

It exits 0 only if every check passed, and stops everything it started. The fakes are the
suite's (imported from tests/fakes by path): the demo needs a clone and ``make venv``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes.graph import FakeGraph  # noqa: E402
from fakes.salesforce import SERVER_UNAVAILABLE, FakeSalesforce  # noqa: E402
from fakes.smtp import FakeSmtp  # noqa: E402

SAMPLES = ("lead_routing.json", "campaign_sentiment.json", "instagram_keywords.json")
CLIENT_ID, CLIENT_SECRET = "3MVG9-demo-connected-app", "demo-client-secret-0123456789"
REFRESH_TOKEN = "demo-refresh-token-9876543210"
IG_TOKEN, IG_ACCOUNT = "EAAdemoGraphAccessToken0123456789", "17841400000000077"
FAN, COMMENT_ASKING, COMMENT_PRAISING = "1234567890000001", "17873440450000001", "17873440450000002"
LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
WAIT_S = 30.0


@dataclass
class Checks:
    """What the demo expects, checked as it goes; printed at the end."""

    results: list[tuple[str, bool]] = field(default_factory=list)

    def __call__(self, what: str, ok: bool) -> None:
        self.results.append((what, bool(ok)))

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.results)


class Fakes:
    """The three providers on loopback ports picked by the OS."""

    def __init__(self) -> None:
        self.salesforce = FakeSalesforce()
        self.salesforce.add_app(CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH_TOKEN)
        self.graph = FakeGraph(
            token=IG_TOKEN,
            account_id=IG_ACCOUNT,
            open_window={FAN},
            comments={COMMENT_ASKING, COMMENT_PRAISING},
        )
        self.smtp = FakeSmtp(mode="plain")

    async def start(self, stack: AsyncExitStack) -> None:
        self.salesforce.start()
        stack.callback(self.salesforce.stop)
        self.graph.start()
        stack.callback(self.graph.stop)
        await self.smtp.start()
        stack.push_async_callback(self.smtp.stop)

    @property
    def egress_allow(self) -> str:
        """The fakes' ``host:port``s: the only places the server may call."""
        ports = [_port(self.salesforce.url), _port(self.graph.url), self.smtp.port]
        return ",".join(f"127.0.0.1:{port}" for port in ports)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class Server:
    """``flowyard serve`` on a temporary SQLite database; its log in the same directory."""

    def __init__(self, workdir: Path, egress_allow: str) -> None:
        self.workdir = workdir
        self.log_path = workdir / "serve.log"
        self.password = secrets.token_urlsafe(18)
        self.egress_allow = egress_allow
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWYARD_")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "FLOWYARD_HOST": "127.0.0.1",
                "FLOWYARD_PORT": "0",
                "FLOWYARD_ADMIN_PASSWORD": self.password,
                "FLOWYARD_EGRESS_ALLOW": self.egress_allow,
                "FLOWYARD_LOAD_PLUGINS": "0",
                "FLOWYARD_POLL_INTERVAL_S": "0.05",
                "XDG_DATA_HOME": str(self.workdir / "data"),
            }
        )
        db = f"sqlite:///{self.workdir / 'flowyard.db'}"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [_flowyard(), "serve", "--db", db],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )

    async def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + WAIT_S
        while (found := LISTENING.search(self.log())) is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flowyard serve exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"flowyard serve did not listen within {WAIT_S:g} s")
            await asyncio.sleep(0.05)
        self.url = f"http://127.0.0.1:{found.group(1)}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it takes more than 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _flowyard() -> str:
    """The ``flowyard`` console script next to this interpreter (the clone's .venv)."""
    candidate = Path(sys.executable).with_name("flowyard")
    found = str(candidate) if candidate.exists() else shutil.which("flowyard")
    if found is None:
        raise RuntimeError("no 'flowyard' command: run 'make demo' (it installs .venv)")
    return found


class Api:
    """The server's API as the admin."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.client.request(method, f"/api/v1{path}", **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    async def start(self, workflow: str, input: dict[str, Any]) -> str:
        run = await self.call("POST", f"/workflows/{workflow}/runs", json={"input": input})
        run_id: str = run["id"]
        return run_id

    async def run(self, run_id: str) -> dict[str, Any]:
        detail: dict[str, Any] = await self.call("GET", f"/runs/{run_id}")
        return detail

    async def until(self, run_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while not done(detail := await self.run(run_id)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} is still {detail['status']} after {WAIT_S:g} s")
            await asyncio.sleep(0.1)
        return detail

    async def ended(self, run_id: str) -> dict[str, Any]:
        terminal = {"succeeded", "failed", "cancelled", "timed_out"}
        return await self.until(run_id, lambda d: d["status"] in terminal)


async def login(server: Server) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=server.url, timeout=30)
    answer = await client.post(
        "/api/v1/auth/token", data={"username": "admin", "password": server.password}
    )
    answer.raise_for_status()
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return client


async def setup(api: Api, fakes: Fakes) -> None:
    """The credentials the samples name, on the fakes, then the samples themselves."""
    credentials = [
        {
            "name": "salesforce",
            "type": "salesforce_oauth",
            "data": {
                "instance_url": fakes.salesforce.url,
                "token_url": fakes.salesforce.url,
                "client_id": CLIENT_ID,
                "flow": "refresh_token",
                "client_secret": CLIENT_SECRET,
                "refresh_token": REFRESH_TOKEN,
            },
        },
        {
            "name": "mail",
            "type": "smtp",
            "data": {"host": "127.0.0.1", "port": fakes.smtp.port, "starttls": False},
        },
        {
            "name": "instagram",
            "type": "meta_graph",
            "data": {
                "access_token": IG_TOKEN,
                "account_id": IG_ACCOUNT,
                "base_url": fakes.graph.url,
            },
        },
    ]
    for credential in credentials:
        created = await api.call("POST", "/credentials", json=credential)
        print(
            f"  credential {created['name']:<11} {created['type']:<17} {created['allowed_origins']}"
        )
    for file in SAMPLES:
        definition = json.loads((ROOT / "examples" / file).read_text())
        saved = await api.call("POST", "/workflows", json=definition)
        print(f"  workflow   {saved['workflow']['name']:<19} from examples/{file}")


def show(title: str, detail: dict[str, Any]) -> None:
    """A run as a few readable lines."""
    print(f"\n  {title}: run {detail['id']} {detail['status'].upper()}")
    retries = {}
    for event in detail["events"]:
        if event["type"] == "step.retrying":
            data = event["data"]
            retries.setdefault(data["node_id"], []).append(
                f"{data['error']['type']} -> retry in {data['delay_s']:.2f} s"
            )
    for step in sorted(detail["steps"], key=lambda s: s["id"]):
        line = f"    {step['node_id']:<16} {step['status']:<10}"
        if step["node_id"] in retries:  # a wait's wake-up counts an attempt too: not shown
            line += f" attempt {step['attempt']}"
        if step["error"]:
            line += f" {step['error']['type']}"
        print(line.rstrip())
        for retry in retries.get(step["node_id"], []):
            print(f"      {retry}")
    if detail["output"] is not None:
        print(f"    output: {json.dumps(detail['output'])}")
    if detail["error"] is not None:
        print(f"    error: {json.dumps(detail['error'])}")


def nodes(detail: dict[str, Any]) -> list[str]:
    ordered = sorted(detail["steps"], key=lambda s: s["id"])
    return list(dict.fromkeys(s["node_id"] for s in ordered))


def step(detail: dict[str, Any], node_id: str) -> dict[str, Any]:
    return [s for s in detail["steps"] if s["node_id"] == node_id][-1]


async def lead_routing(api: Api, fakes: Fakes, check: Checks) -> None:
    print("\n== Lead routing (examples/lead_routing.json)")
    sf = fakes.salesforce
    sf.fail(503, SERVER_UNAVAILABLE, times=2, match="create")
    east = {
        "email": "ada@east.example",
        "region": "East Coast",
        "name": "Lovelace",
        "company": "Analytical Engines",
    }
    detail = await api.ended(await api.start("lead-routing", east))
    show("East Coast lead; Salesforce answers 503 twice", detail)
    check("east lead: succeeded", detail["status"] == "succeeded")
    check(
        "east lead: create retried, succeeded at attempt 3",
        step(detail, "create_lead")["attempt"] == 3 and sf.calls["create"] == 3,
    )
    check(
        "east lead: owned by the East Coast account manager",
        detail["output"]["route"] == "east" and detail["output"]["action"] == "created",
    )

    existing = sf.add_record(
        "Lead",
        {
            "LastName": "Hopper",
            "Company": "Navy",
            "Email": "grace@east.example",
            "OwnerId": "00G5g00000LeadPoolAA",
        },
    )
    dup = {"email": "grace@east.example", "region": "East Coast", "name": "Hopper"}
    detail = await api.ended(await api.start("lead-routing", dup))
    show("East Coast lead already in Salesforce (a duplicate rule blocks the create)", detail)
    check(
        "duplicate: salesforce.duplicates_detected caught, existing lead updated",
        detail["status"] == "succeeded"
        and step(detail, "create_lead")["error"]["type"] == "salesforce.duplicates_detected"
        and detail["output"]
        == {"email": dup["email"], "route": "east", "action": "updated", "record_id": existing},
    )

    west = {"email": "alan@west.example", "region": "West"}
    detail = await api.ended(await api.start("lead-routing", west))
    show("West lead", detail)
    check(
        "west lead: assigned to the general pool",
        detail["status"] == "succeeded"
        and "assign_pool" in nodes(detail)
        and detail["output"]["route"] == "pool",
    )
    owners = sorted(r.get("OwnerId", "") for r in sf.records.get("Lead", {}).values())
    check(
        "Salesforce holds 3 leads: 2 of the East Coast manager, 1 in the pool",
        owners == ["0055g00000EastMgrAAA", "0055g00000EastMgrAAA", "00G5g00000LeadPoolAA"],
    )


async def campaign(api: Api, fakes: Fakes, check: Checks) -> None:
    print("\n== Campaign (examples/campaign_sentiment.json)")
    people = {
        "positive": (
            {"email": "kay@customer.example", "name": "Kay"},
            "Yes, this looks great! I would love a demo next week.",
        ),
        "negative": (
            {"email": "lin@customer.example", "name": "Lin"},
            "This is terrible. Your last invoice was wrong and nobody helped.",
        ),
    }
    started = {
        label: await api.start("campaign-sentiment", person)
        for label, (person, _) in people.items()
    }
    for label, run_id in started.items():
        await api.until(run_id, lambda d: d["status"] == "waiting")
        text = people[label][1]
        print(f"  {people[label][0]['name']} replies ({label}): {text!r}")
        await api.call("POST", f"/runs/{run_id}/signals/reply", json={"text": text})
    positive, negative = [await api.ended(run_id) for run_id in started.values()]
    show("Kay (positive reply)", positive)
    show("Lin (negative reply)", negative)
    check(
        "positive reply: a Salesforce Task for the sales rep",
        positive["status"] == "succeeded"
        and positive["output"]["outcome"] == "sales_task"
        and len(fakes.salesforce.records.get("Task", {})) == 1,
    )
    check(
        "negative reply: a Salesforce Case for support",
        negative["status"] == "succeeded"
        and negative["output"]["outcome"] == "support_case"
        and len(fakes.salesforce.records.get("Case", {})) == 1,
    )


async def instagram(api: Api, fakes: Fakes, check: Checks) -> None:
    print("\n== Instagram (examples/instagram_keywords.json)")
    asking = {
        "sender_id": FAN,
        "comment_id": COMMENT_ASKING,
        "text": "Love it! What's the price?",
        "username": "kay",
    }
    praising = {"sender_id": FAN, "comment_id": COMMENT_PRAISING, "text": "Lovely picture"}
    dm = await api.ended(await api.start("instagram-keywords", asking))
    like = await api.ended(await api.start("instagram-keywords", praising))
    show(f"comment {asking['text']!r}", dm)
    show(f"comment {praising['text']!r}", like)
    check(
        "keyword comment: a DM to its author",
        dm["status"] == "succeeded" and [m["recipient"] for m in fakes.graph.messages] == [FAN],
    )
    check(
        "other comment: a like",
        like["status"] == "succeeded" and fakes.graph.likes == [("comment", COMMENT_PRAISING)],
    )


def received(fakes: Fakes, check: Checks) -> None:
    print("\n== What the fakes received")
    sf = fakes.salesforce
    print(f"  Salesforce: {sf.calls['token']} token request(s), then:")
    for seen in sf.seen:
        if seen.kind != "token":
            print(f"    {seen.method:<6} {seen.path}")
    print(f"  SMTP relay: {len(fakes.smtp.received)} message(s)")
    for mail in fakes.smtp.received:
        print(f"    to {', '.join(mail.rcpt_tos)}: {mail.message['Subject']}")
    print(f"  Graph API: {len(fakes.graph.requests)} request(s)")
    for message in fakes.graph.messages:
        print(f"    DM to {message['recipient']}: {message['text'][:60]}...")
    for kind, target in fakes.graph.likes:
        print(f"    like of {kind} {target}")
    subjects = sorted(str(m.message["Subject"]) for m in fakes.smtp.received)
    check(
        "email: 3 lead notifications to sales ops and 2 campaign offers",
        sum(s.startswith("New lead") for s in subjects) == 3
        and sum("your workflows could run themselves" in s for s in subjects) == 2
        and len(subjects) == 5,
    )
    # 3 creates (two 503s), create + update (the duplicate), 1 create (pool), Task, Case.
    check(
        "Salesforce: one token for 8 REST calls",
        sf.calls["token"] == 1 and sum(n for k, n in sf.calls.items() if k != "token") == 8,
    )


async def demo(keep: bool) -> int:
    check = Checks()
    workdir = Path(tempfile.mkdtemp(prefix="flowyard-demo-"))
    server: Server | None = None
    try:
        async with AsyncExitStack() as stack:
            fakes = Fakes()
            await fakes.start(stack)
            print("== Local fakes")
            print(
                f"  Salesforce {fakes.salesforce.url}, Graph {fakes.graph.url}, "
                f"SMTP 127.0.0.1:{fakes.smtp.port}"
            )
            server = Server(workdir, fakes.egress_allow)
            server.start()
            stack.callback(server.stop)
            await server.wait_ready()
            kept = "kept" if keep else "removed at the end; --keep keeps them"
            print(f"== flowyard serve on {server.url} (database and log in {workdir}, {kept})")
            print(f"  egress allowed to {fakes.egress_allow} only")
            client = await login(server)
            stack.push_async_callback(client.aclose)
            api = Api(client)
            await setup(api, fakes)
            steps: list[Callable[[Api, Fakes, Checks], Awaitable[None]]] = [
                lead_routing,
                campaign,
                instagram,
            ]
            for part in steps:
                await part(api, fakes, check)
            received(fakes, check)
    except Exception as exc:  # the demo reports any failure as one, then cleans up
        check(f"the demo ran to its end ({type(exc).__name__}: {exc})", False)
    finally:
        if server is not None and not check.passed:
            print("\n== The server's log (last 40 lines)")
            print("\n".join(server.log().splitlines()[-40:]))
        if keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n== Checks")
    for what, ok in check.results:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    print("\ndemo passed" if check.passed else "\ndemo FAILED")
    return 0 if check.passed else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the database and server log")
    args = parser.parse_args()
    sys.exit(asyncio.run(demo(args.keep)))


if __name__ == "__main__":
    main()
