"""The ``email`` node end to end: runs executed by a real worker of a real container, sending
over real sockets to a local SMTP relay (aiosmtpd: STARTTLS, implicit TLS, AUTH, scripted
replies) and a local SendGrid mail/send endpoint."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import logging
import random
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fakes.sendgrid import Answer, FakeSendgrid, too_many
from fakes.smtp import FakeSmtp, TlsFiles, make_tls
from flowyard.bootstrap import Container, build
from flowyard.domain.credentials import CredentialType
from flowyard.domain.statuses import RunStatus
from flowyard.integrations.email import EmailNode
from flowyard.service import RunDetail
from flowyard.settings import Settings
from support.dbdump import dump_database
from support.runs import run_definition

PASSWORD = "smtp-pw-7Kq2ZxR9vW"
API_KEY = "SG.fake-key-Qm3Lp8Vt2Xy5"
USER = "mailer"
BODY = {"text": "Hello {{ input.name }}", "html": "<p>Hello {{ input.name }}</p>"}


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TlsFiles:
    """A throwaway CA the node trusts (SSL_CERT_FILE, as for HTTPS) and a relay cert."""
    files = make_tls(tmp_path / "tls")
    monkeypatch.setenv("SSL_CERT_FILE", str(files.ca))
    return files


@pytest.fixture
async def relay(tls: TlsFiles) -> AsyncIterator[FakeSmtp]:
    """A STARTTLS relay requiring AUTH."""
    fake = await FakeSmtp(mode="starttls", tls=tls, users={USER: PASSWORD}).start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def sendgrid() -> Iterator[FakeSendgrid]:
    fake = FakeSendgrid(API_KEY).start()
    try:
        yield fake
    finally:
        fake.stop()


def workflow(config: dict[str, Any], *, attempts: int = 1) -> dict[str, Any]:
    return {
        "name": "mail",
        "start": "send",
        "nodes": [
            {
                "id": "send",
                "type": "email",
                "config": config,
                "retry": {"max_attempts": attempts, "initial_interval_s": 0, "jitter": "none"},
            }
        ],
    }


def mail(credential: str = "relay", **config: Any) -> dict[str, Any]:
    return {
        "credential": credential,
        "from": "Flowyard <noreply@example.com>",
        "to": "{{ input.email }}",
        "subject": "Hi {{ input.name }}",
        **BODY,
        **config,
    }


async def add_relay(
    container: Container, relay: FakeSmtp, name: str = "relay", **data: Any
) -> None:
    fields = {"host": "127.0.0.1", "port": relay.port, "username": USER, "password": PASSWORD}
    await container.credentials.create(name, CredentialType.SMTP, {**fields, **data})


async def add_sendgrid(container: Container, fake: FakeSendgrid, **kwargs: Any) -> None:
    data = {"api_key": kwargs.pop("api_key", API_KEY), "base_url": fake.url}
    await container.credentials.create("sg", CredentialType.SENDGRID, data, **kwargs)


async def send(
    container: Container, config: dict[str, Any], *, attempts: int = 1, **input: Any
) -> RunDetail:
    person = {"name": "Ada", "email": "ada@example.org", **input}
    return await run_definition(container, workflow(config, attempts=attempts), person)


def error_of(detail: RunDetail) -> dict[str, Any]:
    assert detail.run.status is RunStatus.FAILED, detail.run.output
    error = detail.steps[-1].error
    assert error is not None
    return error


def retried(detail: RunDetail) -> list[dict[str, Any]]:
    """The errors of the attempts that were retried."""
    return [e.data["error"] for e in detail.events if e.type == "step.retrying"]


def expected_id(detail: RunDetail, domain: str = "example.com") -> str:
    key = f"{detail.run.id}:send:0"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


# -- SMTP ---------------------------------------------------------------------------------


async def test_smtp_sends_over_starttls_with_auth(container: Container, relay: FakeSmtp) -> None:
    await add_relay(container, relay)
    config = mail(
        to=["{{ input.email }}", "Bob Stone <bob@example.org>"],
        cc="carol@example.org",
        bcc=["audit@example.org", "ADA@example.org"],  # a duplicate of a to: sent once
        reply_to="support@example.com",
        headers={"X-Campaign": "{{ input.name }}-2026", "List-Unsubscribe": "<mailto:u@x.org>"},
    )
    detail = await send(container, config)
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    output = detail.steps[0].output
    rcpts = ["ada@example.org", "bob@example.org", "carol@example.org", "audit@example.org"]
    assert output == {
        "message_id": expected_id(detail),
        "transport": "smtp",
        "accepted": rcpts,
        "refused": {},
        "provider_message_id": None,
    }
    [got] = relay.received
    assert (got.mail_from, got.rcpt_tos, got.login, got.tls) == (
        "noreply@example.com",
        rcpts,
        USER,
        True,
    )
    assert relay.logins == [("PLAIN", USER, True)]
    msg = got.message
    assert msg["From"] == "Flowyard <noreply@example.com>"
    assert msg["To"] == "ada@example.org, Bob Stone <bob@example.org>"
    assert msg["Cc"] == "carol@example.org"
    assert msg["Bcc"] is None and b"audit@" not in got.data
    assert msg["Reply-To"] == "support@example.com"
    assert msg["Subject"] == "Hi Ada"
    assert msg["Message-ID"] == output["message_id"]
    assert msg["X-Campaign"] == "Ada-2026"
    assert msg.get_content_type() == "multipart/alternative"
    parts = [(p.get_content_type(), p.get_content().strip()) for p in msg.iter_parts()]
    assert parts == [("text/plain", "Hello Ada"), ("text/html", "<p>Hello Ada</p>")]
    # Another run (another idempotency key): another Message-ID.
    again = await send(container, config)
    assert again.steps[0].output["message_id"] not in (output["message_id"], None)


async def test_implicit_tls_on_port_465(container: Container, tmp_path: Path, tls: Any) -> None:
    """Port 465 means TLS from the first byte (RFC 8314); a loopback address of its own so
    the port is free."""
    ip = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    files = make_tls(tmp_path / "tls465", (ip,))
    relay = FakeSmtp(
        mode="implicit",
        tls=files,
        users={USER: PASSWORD},
        host=ip,
        port=465,
        exclude_auth=("PLAIN",),  # AUTH LOGIN, the other mechanism relays offer
    )
    try:
        await relay.start()
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            pytest.skip(f"cannot listen on {ip}:465 here ({exc})")
        raise
    try:
        settings = container.settings.model_copy(update={"egress_allow": [ip]})
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SSL_CERT_FILE", str(files.ca))
            c = await build(settings)
            try:
                await c.credentials.create(
                    "tls465",
                    CredentialType.SMTP,
                    {"host": ip, "port": 465, "username": USER, "password": PASSWORD},
                )
                detail = await send(c, mail("tls465"))
            finally:
                await c.close()
    finally:
        await relay.stop()
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [got] = relay.received
    assert got.tls and got.login == USER
    assert relay.logins == [("LOGIN", USER, True)]
    assert relay.counts["connections"] == 1


async def test_no_starttls_offered_is_refused_not_sent_in_clear(
    container: Container, tls: TlsFiles
) -> None:
    plain = await FakeSmtp(mode="plain").start()
    try:
        await add_relay(container, plain, username=None, password=None)
        error = error_of(await send(container, mail()))
        assert (error["type"], error["transient"]) == ("email.smtp_unsupported", False)
        assert "STARTTLS" in error["message"]
        assert plain.received == [] and plain.counts["MAIL"] == 0
    finally:
        await plain.stop()


async def test_a_password_never_goes_in_clear_but_to_this_machine(container: Container) -> None:
    await container.credentials.create(
        "remote",
        CredentialType.SMTP,
        {"host": "mail.example.com", "username": USER, "password": PASSWORD, "starttls": False},
    )
    error = error_of(await send(container, mail("remote")))
    assert (error["type"], error["transient"]) == ("email.insecure", False)
    # To a relay on this machine a plain login is allowed (a local MTA or a sidecar).
    plain = await FakeSmtp(mode="plain", users={USER: PASSWORD}).start()
    try:
        await add_relay(container, plain, starttls=False)
        detail = await send(container, mail())
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
        assert [(r.login, r.tls) for r in plain.received] == [(USER, False)]
    finally:
        await plain.stop()


async def test_an_untrusted_certificate_is_permanent(
    container: Container, relay: FakeSmtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")
    await add_relay(container, relay)
    error = error_of(await send(container, mail(), attempts=3))
    assert (error["type"], error["transient"]) == ("email.tls", False)
    assert relay.received == [] and relay.logins == []


async def test_a_wrong_password_is_permanent(container: Container, relay: FakeSmtp) -> None:
    await add_relay(container, relay, password="not-the-password")
    error = error_of(await send(container, mail(), attempts=3))
    assert (error["type"], error["transient"]) == ("email.smtp_535", False)
    assert relay.received == [] and not any(ok for _, _, ok in relay.logins)


async def test_a_4xx_reply_is_retried(container: Container, relay: FakeSmtp) -> None:
    relay.script("DATA", ["421 4.3.2 System not accepting network messages"])
    await add_relay(container, relay)
    detail = await send(container, mail(), attempts=3)
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [first] = retried(detail)
    assert (first["type"], first["transient"]) == ("email.smtp_421", True)
    assert first["details"]["code"] == 421
    assert relay.counts["DATA"] == 2 and len(relay.received) == 1
    assert detail.steps[0].attempt == 2


async def test_a_relay_hanging_after_accepting_is_a_success(
    container: Container, relay: FakeSmtp
) -> None:
    """Once DATA is answered 250 the message is sent: a QUIT that never returns must not
    become a timeout, whose retry would send it again. (The connection says goodbye in the
    step when it has sent its last message: here its first.)"""
    email_node(container).smtp_pool.max_messages = 1
    relay.script("QUIT", ["HANG"])
    await add_relay(container, relay)
    detail = await send(container, mail(timeout_s=0.5), attempts=3)
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert len(relay.received) == 1 and relay.counts["QUIT"] == 1


def email_node(container: Container) -> EmailNode:
    node = container.registry.get("email")
    assert isinstance(node, EmailNode)
    return node


async def test_messages_to_one_relay_share_a_connection(
    container: Container, relay: FakeSmtp
) -> None:
    """A campaign's messages pay for TCP, STARTTLS and AUTH once, not once each; closing
    the container says goodbye on the idle connection."""
    await add_relay(container, relay)
    for name in ("Ada", "Bob", "Cy"):
        detail = await send(container, mail(), name=name)
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert [r.message["Subject"] for r in relay.received] == ["Hi Ada", "Hi Bob", "Hi Cy"]
    assert relay.counts["connections"] == 1 and len(relay.logins) == 1
    assert all(r.tls and r.login == USER for r in relay.received)
    assert relay.counts["QUIT"] == 0
    await container.registry.aclose()
    assert relay.counts["QUIT"] == 1


async def test_a_connection_the_relay_dropped_is_replaced_before_sending(
    container: Container, relay: FakeSmtp
) -> None:
    """The relay closed the idle connection: the next message goes on a new one, at its
    first attempt, and arrives once."""
    await add_relay(container, relay)
    assert (await send(container, mail())).run.status is RunStatus.SUCCEEDED
    relay.script("RSET", ["DROP"])
    detail = await send(container, mail(), attempts=3, name="Bob")
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert retried(detail) == [] and detail.steps[0].attempt == 1
    assert [r.message["Subject"] for r in relay.received] == ["Hi Ada", "Hi Bob"]
    assert relay.counts["connections"] == 2


async def test_an_edited_credential_does_not_reuse_the_old_login(
    container: Container, relay: FakeSmtp
) -> None:
    container.credential_resolver.ttl_s = 0  # the edit reaches the worker at once
    await add_relay(container, relay)
    assert (await send(container, mail())).run.status is RunStatus.SUCCEEDED
    relay.users["mailer2"] = "another-pw-5Tg8Lq"
    fields = {"host": "127.0.0.1", "port": relay.port, "username": "mailer2"}
    await container.credentials.update("relay", data={**fields, "password": "another-pw-5Tg8Lq"})
    assert (await send(container, mail(), name="Bob")).run.status is RunStatus.SUCCEEDED
    assert [r.login for r in relay.received] == [USER, "mailer2"]
    assert relay.counts["connections"] == 2


async def test_5xx_replies_are_permanent(container: Container, relay: FakeSmtp) -> None:
    relay.script("MAIL", ["553 5.7.1 Sender address rejected: not owned by user"])
    await add_relay(container, relay)
    error = error_of(await send(container, mail(), attempts=3))
    assert (error["type"], error["transient"]) == ("email.smtp_553", False)
    assert relay.counts["MAIL"] == 1
    relay.script("DATA", ["554 5.6.0 Message rejected as spam"])
    error = error_of(await send(container, mail(), attempts=3))
    assert (error["type"], error["transient"]) == ("email.smtp_554", False)
    assert relay.received == []


async def test_refused_recipients(container: Container, relay: FakeSmtp) -> None:
    await add_relay(container, relay)
    relay.refuse("gone@example.org", "550 5.1.1 <gone@example.org>: Recipient address rejected")
    detail = await send(container, mail(to=["{{ input.email }}", "gone@example.org"]))
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert detail.steps[0].output["accepted"] == ["ada@example.org"]
    assert detail.steps[0].output["refused"] == {
        "gone@example.org": {
            "code": 550,
            "message": "5.1.1 <gone@example.org>: Recipient address rejected",
        }
    }
    assert relay.received[-1].rcpt_tos == ["ada@example.org"]
    # Every recipient refused: nothing was sent.
    error = error_of(await send(container, mail(to="gone@example.org"), attempts=3))
    assert (error["type"], error["transient"]) == ("email.recipients_refused", False)
    assert list(error["details"]["refused"]) == ["gone@example.org"]
    # Refused for now (4xx, a full mailbox): transient.
    relay.refuse("busy@example.org", "452 4.2.2 Mailbox full")
    error = error_of(await send(container, mail(to="busy@example.org")))
    assert (error["type"], error["transient"]) == ("email.smtp_452", True)
    assert error["details"]["refused"]["busy@example.org"]["code"] == 452
    assert len(relay.received) == 1


async def test_connection_failures_and_garbage(
    container: Container, relay: FakeSmtp, tls: TlsFiles
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    await container.credentials.create(
        "closed", CredentialType.SMTP, {"host": "127.0.0.1", "port": closed}
    )
    error = error_of(await send(container, mail("closed")))
    assert (error["type"], error["transient"]) == ("email.network", True)

    # A relay that accepts the connection and never greets: the deadline.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = mute.sockets[0].getsockname()[1]
        await container.credentials.create(
            "mute", CredentialType.SMTP, {"host": "127.0.0.1", "port": port}
        )
        error = error_of(await send(container, mail("mute", timeout_s=0.3)))
        assert (error["type"], error["transient"]) == ("email.timeout", True)
    finally:
        mute.close()
        await mute.wait_closed()

    # Something that does not speak SMTP: garbage, an endless line.
    for answer in (b"HTTP/1.1 400 Bad Request\r\n\r\n", b"220 " + b"x" * 100_000 + b"\r\n"):

        async def garbage(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes = answer
        ) -> None:
            writer.write(answer)
            await reader.read()
            writer.close()

        liar = await asyncio.start_server(garbage, "127.0.0.1", 0)
        try:
            port = liar.sockets[0].getsockname()[1]
            await container.credentials.create(
                f"liar{port}", CredentialType.SMTP, {"host": "127.0.0.1", "port": port}
            )
            error = error_of(await send(container, mail(f"liar{port}"), attempts=3))
            assert (error["type"], error["transient"]) == ("email.smtp_protocol", False)
        finally:
            liar.close()
            await liar.wait_closed()

    # Dropped after the message's end, before the relay's reply: retried, and SMTP cannot
    # tell whether the relay kept the first copy (documented); both carry one Message-ID.
    await add_relay(container, relay)
    relay.script("DATA", ["TAKE_AND_DROP"])
    detail = await send(container, mail(), attempts=2)
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert [e["type"] for e in retried(detail)] == ["email.network"]
    ids = {r.message["Message-ID"] for r in relay.received}
    assert len(relay.received) == 2 and ids == {expected_id(detail)}


# -- What is checked before anything is sent -----------------------------------------------


async def test_header_injection_is_refused(container: Container, relay: FakeSmtp) -> None:
    await add_relay(container, relay)
    injected = "Ada\r\nBcc: victim@example.net"
    error = error_of(await send(container, mail(), name=injected))
    assert (error["type"], error["transient"]) == ("email.invalid_header", False)
    tagged = mail(subject="Hi", headers={"X-Tag": "{{ input.name }}"})
    error = error_of(await send(container, tagged, name="a\nb"))
    assert error["type"] == "email.invalid_header" and error["details"]["header"] == "X-Tag"
    error = error_of(await send(container, mail(), email="ada@example.org\r\nBcc: x@example.net"))
    assert error["type"] == "email.invalid_address"
    error = error_of(await send(container, mail(headers={"{{ input.name }}": "x"}), name="To"))
    assert error["type"] == "email.invalid_header"
    assert relay.counts["connections"] == 0


async def test_invalid_addresses_are_permanent(container: Container, relay: FakeSmtp) -> None:
    await add_relay(container, relay)
    for field, value in [
        ("email", "not-an-address"),
        ("email", "ada@localhost"),
        ("email", "a@example.org, b@example.org"),
    ]:
        error = error_of(await send(container, mail(), **{field: value}))
        assert (error["type"], error["transient"]) == ("email.invalid_address", False), value
        assert error["details"]["field"] == "to"
    error = error_of(await send(container, mail(**{"from": "{{ input.name }}"})))
    assert error["type"] == "email.invalid_address" and error["details"]["field"] == "from"
    error = error_of(await send(container, mail(cc=["ok@example.org", "{{ input.name }}"])))
    assert error["details"]["field"] == "cc/1"
    assert relay.counts["connections"] == 0


def test_the_config_is_checked_when_saved() -> None:
    node = EmailNode()
    base = {"credential": "relay", "from": "a@example.com", "to": "b@example.com"}
    node.parse_config({**base, "html": "<p>x</p>"})
    for bad in (
        {},  # no body
        {"text": "x", "headers": {"Bad Header": "x"}},
        {"text": "x", "headers": {"Bcc": "x@example.com"}},  # set through the fields
        {"text": "x", "to": []},
        {"text": "x", "max_message_bytes": 100 * 1024 * 1024},
    ):
        with pytest.raises(ValidationError):
            node.parse_config({**base, **bad})
    schema = EmailNode.describe()["config_schema"]
    assert {"from", "to", "cc", "bcc", "reply_to", "headers"} <= set(schema["properties"])


async def test_a_message_over_the_cap_is_not_sent(
    container: Container, relay: FakeSmtp, sendgrid: FakeSendgrid
) -> None:
    await add_relay(container, relay)
    await add_sendgrid(container, sendgrid)
    big = {"text": "{{ input.name * 3000 }}", "max_message_bytes": 4096}
    for credential in ("relay", "sg"):
        error = error_of(await send(container, mail(credential, **big), attempts=3))
        assert (error["type"], error["transient"]) == ("email.too_large", False)
        assert error["details"]["max_bytes"] == 4096
    assert relay.counts["connections"] == 0 and sendgrid.calls == 0


async def test_personalised_emails_from_the_run_input(
    container: Container, relay: FakeSmtp
) -> None:
    await add_relay(container, relay)
    people = [("Ada", "ada@example.org"), ("Zoë", "zoe@example.org"), ("Alan", "al@x.org")]
    config = mail(to="{{ input.emails }}", cc=[])
    for i, (name, address) in enumerate(people):
        detail = await send(container, config, name=name, emails=[address, f"team+{i}@x.org"])
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    assert [(r.message["Subject"], r.rcpt_tos[0]) for r in relay.received] == [
        (f"Hi {name}", address) for name, address in people
    ]
    assert [r.rcpt_tos[1] for r in relay.received] == [f"team+{i}@x.org" for i in range(3)]
    texts = [r.message.get_body(("plain",)) for r in relay.received]
    assert [t.get_content().strip() for t in texts if t is not None] == [
        f"Hello {name}" for name, _ in people
    ]


# -- Where the credential may go -----------------------------------------------------------


async def test_the_egress_policy_applies_to_smtp(settings: Settings, relay: FakeSmtp) -> None:
    c = await build(settings.model_copy(update={"egress_allow": []}))
    try:
        await add_relay(c, relay)
        error = error_of(await send(c, mail(), attempts=3))
    finally:
        await c.close()
    assert (error["type"], error["transient"]) == ("egress.denied", False)
    assert relay.counts["connections"] == 0


async def test_credentials_go_only_to_their_origins(
    container: Container, relay: FakeSmtp, sendgrid: FakeSendgrid
) -> None:
    fields = {"host": "127.0.0.1", "port": relay.port, "username": USER, "password": PASSWORD}
    await container.credentials.create(
        "elsewhere", CredentialType.SMTP, fields, allowed_origins=["smtp://mail.example.com:587"]
    )
    error = error_of(await send(container, mail("elsewhere")))
    assert (error["type"], error["transient"]) == ("credential.origin_not_allowed", False)
    await add_sendgrid(container, sendgrid, allowed_origins=["https://api.sendgrid.com"])
    error = error_of(await send(container, mail("sg")))
    assert error["type"] == "credential.origin_not_allowed"
    assert relay.counts["connections"] == 0 and sendgrid.calls == 0
    await container.credentials.create(
        "token", CredentialType.BEARER, {"token": API_KEY}, allowed_origins=[sendgrid.url]
    )
    error = error_of(await send(container, mail("token")))
    assert (error["type"], error["transient"]) == ("credential.type", False)
    assert sendgrid.calls == 0


# -- SendGrid ------------------------------------------------------------------------------


async def test_sendgrid_sends(container: Container, sendgrid: FakeSendgrid) -> None:
    await add_sendgrid(container, sendgrid)
    config = mail(
        "sg",
        to=["{{ input.email }}", "Bob <bob@example.org>"],
        bcc="audit@example.org",
        reply_to=["a@example.com", "b@example.com"],
        headers={"X-Campaign": "spring"},
    )
    detail = await send(container, config)
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    [(body, provider_id)] = sendgrid.sent
    message_id = expected_id(detail)
    assert detail.steps[0].output == {
        "message_id": message_id,
        "transport": "sendgrid",
        "accepted": ["ada@example.org", "bob@example.org", "audit@example.org"],
        "refused": {},
        "provider_message_id": provider_id,
    }
    assert body == {
        "personalizations": [
            {
                "to": [{"email": "ada@example.org"}, {"email": "bob@example.org", "name": "Bob"}],
                "bcc": [{"email": "audit@example.org"}],
            }
        ],
        "from": {"email": "noreply@example.com", "name": "Flowyard"},
        "subject": "Hi Ada",
        "content": [
            {"type": "text/plain", "value": "Hello Ada"},
            {"type": "text/html", "value": "<p>Hello Ada</p>"},
        ],
        "headers": {"X-Campaign": "spring", "X-Flowyard-Message-Id": message_id},
        "custom_args": {"flowyard_message_id": message_id},
        "reply_to_list": [{"email": "a@example.com"}, {"email": "b@example.com"}],
    }
    _, headers, _ = sendgrid.requests[0]
    assert headers["Authorization"] == f"Bearer {API_KEY}"


async def test_sendgrid_transient_answers_are_retried(
    container: Container, sendgrid: FakeSendgrid
) -> None:
    await add_sendgrid(container, sendgrid)
    sendgrid.script(
        too_many(1),
        Answer(503, {"errors": [{"message": "Service Unavailable", "field": None}]}),
        Answer(502, raw=b"<html><body>Bad Gateway</body></html>", content_type="text/html"),
    )
    detail = await send(container, mail("sg"), attempts=4)
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    errors = retried(detail)
    assert [(e["type"], e["transient"]) for e in errors] == [
        ("email.sendgrid_429", True),
        ("email.sendgrid_503", True),
        ("email.sendgrid_502", True),
    ]
    assert errors[0]["details"]["retry_after_s"] == 1
    assert errors[0]["details"]["errors"] == [
        {"message": "too many requests", "field": None, "help": None}
    ]
    assert "Bad Gateway" in errors[2]["details"]["body"]
    assert sendgrid.calls == 4 and len(sendgrid.sent) == 1


async def test_sendgrid_permanent_answers(container: Container, sendgrid: FakeSendgrid) -> None:
    await add_sendgrid(container, sendgrid)
    # 400: SendGrid's own validation (an empty subject), its error list in the details.
    error = error_of(await send(container, mail("sg", subject=""), attempts=3))
    assert (error["type"], error["transient"]) == ("email.sendgrid_400", False)
    assert [e["field"] for e in error["details"]["errors"]] == ["subject"]
    # 403: an unverified sender; 413: too large for SendGrid.
    sendgrid.verified_senders = {"someone@example.com"}
    error = error_of(await send(container, mail("sg")))
    assert (
        error["type"] == "email.sendgrid_403" and error["details"]["errors"][0]["field"] == "from"
    )
    sendgrid.verified_senders = None
    sendgrid.max_payload_bytes = 100
    error = error_of(await send(container, mail("sg")))
    assert error["type"] == "email.sendgrid_413"
    sendgrid.max_payload_bytes = 30 * 1024 * 1024
    # Garbage: truncated JSON, a huge body.
    sendgrid.script(Answer(400, raw=b'{"errors": [{"message": "trunc'))
    error = error_of(await send(container, mail("sg")))
    assert error["type"] == "email.sendgrid_400" and error["details"]["body"].startswith('{"err')
    sendgrid.script(Answer(200, raw=b"x" * (2 * 1024 * 1024)))
    error = error_of(await send(container, mail("sg")))
    assert (error["type"], error["transient"]) == ("email.response_too_large", False)
    assert len(sendgrid.sent) == 0


# -- Secrets -------------------------------------------------------------------------------


async def test_secrets_are_nowhere(
    container: Container,
    relay: FakeSmtp,
    sendgrid: FakeSendgrid,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await add_relay(container, relay)
    await add_relay(container, relay, name="wrong", password=PASSWORD[::-1])
    await add_sendgrid(container, sendgrid)
    # The provider echoing the key in an error is redacted too.
    sendgrid.script(Answer(400, {"errors": [{"message": f"bad key {API_KEY}", "field": None}]}))
    details = [
        await send(container, mail("relay")),
        await send(container, mail("wrong")),
        await send(container, mail("sg")),
        await send(container, mail("sg")),
    ]
    assert [d.run.status for d in details] == [
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.FAILED,
        RunStatus.SUCCEEDED,
    ]
    assert "***" in json.dumps(details[2].steps[0].error)
    plain_auth = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    texts = [json.dumps([d.run.output, d.run.error], default=str) for d in details]
    texts += [json.dumps([(s.output, s.error) for s in d.steps], default=str) for d in details]
    texts += [json.dumps([e.data for e in d.events], default=str) for d in details]
    texts += [await dump_database(container.settings.db_url), caplog.text]
    for secret in (PASSWORD, PASSWORD[::-1], API_KEY, plain_auth):
        assert all(secret not in text for text in texts), secret
