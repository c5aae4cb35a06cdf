"""Helpers of the salesforce node's tests: the connected app's credentials, and building
and running workflows of salesforce steps against ``tests/fakes/salesforce.py``."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes.salesforce import FakeSalesforce
from flowyard.bootstrap import Container
from flowyard.domain.credentials import CredentialType
from flowyard.service import RunDetail
from flowyard.settings import Settings
from support.runs import run_definition

CLIENT_ID = "3MVG9-connected-app"
CLIENT_SECRET = "cs-9F8E7D6C5B4A3210-secret"
REFRESH_TOKEN = "rt-0A1B2C3D4E5F6789-refresh"
USERNAME = "integration@acme.example"


def keypair() -> tuple[str, str]:
    """A new RSA key pair in PEM (private PKCS#8, public SubjectPublicKeyInfo)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


PRIVATE_PEM, PUBLIC_PEM = keypair()


def sqlite_copy(tmp_path: Path, template: Path) -> str:
    """A fresh SQLite database (a copy of the session's migrated template): nothing in these
    tests depends on the backend (the store contract suite covers both), and it is fast."""
    path = tmp_path / "flowyard.db"
    shutil.copy(template, path)
    return f"sqlite:///{path}"


def fast_settings(db_url: str) -> Settings:
    """The suite's settings, credentials read afresh by every step (an edit is seen at
    once)."""
    return Settings(
        db_url=db_url,
        poll_interval_s=0.05,
        reap_interval_s=0.5,
        workers=0,
        load_plugins=False,
        credential_cache_ttl_s=0,
    )


def new_fake(page_size: int = 10) -> FakeSalesforce:
    """A started fake with the connected app registered (every flow)."""
    sf = FakeSalesforce(page_size=page_size).start()
    sf.add_app(
        CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=REFRESH_TOKEN,
        public_key=PUBLIC_PEM,
        username=USERNAME,
    )
    return sf


async def add_credential(
    container: Container,
    fake: FakeSalesforce,
    name: str = "sf",
    *,
    flow: str = "refresh_token",
    allowed_origins: list[str] | None = None,
    **data: Any,
) -> None:
    """Save a ``salesforce_oauth`` credential for ``fake`` (instance and token host) with
    ``flow``'s secrets; ``data`` overrides fields."""
    values: dict[str, Any] = {"instance_url": fake.url, "client_id": CLIENT_ID, "flow": flow}
    values["token_url"] = fake.url
    if flow == "jwt_bearer":
        values.update(private_key=PRIVATE_PEM, username=USERNAME)
    else:
        values["client_secret"] = CLIENT_SECRET
    if flow == "refresh_token":
        values["refresh_token"] = REFRESH_TOKEN
    values.update(data)
    await container.credentials.create(
        name, CredentialType.SALESFORCE_OAUTH, values, allowed_origins=allowed_origins
    )


def sf(node_id: str, operation: str, *, then: str | None = None, **config: Any) -> dict[str, Any]:
    """A ``salesforce`` node spec (one attempt unless ``retry`` is given)."""
    retry = config.pop("retry", {"max_attempts": 1})
    catch = config.pop("catch", None)
    spec: dict[str, Any] = {
        "id": node_id,
        "type": "salesforce",
        "config": {"credential": config.pop("credential", "sf"), "operation": operation, **config},
        "retry": retry,
    }
    if then:
        spec["next"] = then
    if catch:
        spec["catch"] = catch
    return spec


async def run(container: Container, *nodes: dict[str, Any], input: Any = None) -> RunDetail:
    """Save a workflow of ``nodes`` (the first starts), run it to its end with a worker."""
    definition = {"name": f"sf-{uuid.uuid4().hex[:8]}", "start": nodes[0]["id"], "nodes": nodes}
    return await run_definition(container, definition, input or {})


def output(detail: RunDetail, node_id: str) -> Any:
    """The output of ``node_id``'s last step."""
    [step] = [s for s in detail.steps if s.node_id == node_id][-1:]
    return step.output


def error(detail: RunDetail, node_id: str) -> dict[str, Any]:
    """The error of ``node_id``'s last step (it must have failed)."""
    [step] = [s for s in detail.steps if s.node_id == node_id][-1:]
    assert step.error is not None, f"{node_id} did not fail: {step.output}"
    return step.error


LEAD = {"LastName": "Doe", "Company": "Acme", "Email": "jane@acme.example"}
