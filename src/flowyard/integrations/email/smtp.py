"""The SMTP transport: connections to the credential's relay, kept and reused by the next
messages (:class:`SmtpPool`), under the credential's allowed origins (``smtp://host:port``)
and the egress policy of the step's client, with TLS verified against the same trust store
as HTTPS.

TLS: port 465 is implicit TLS (RFC 8314); any other port upgrades with STARTTLS when the
credential says ``starttls`` (the default), and the send fails if the relay does not offer
it rather than going on in clear. A login (``username`` and ``password``) is never sent
unencrypted, unless the relay is on this machine (``localhost``, 127.0.0.0/8, ::1).

Retries: a relay's 4xx replies and connection failures are transient, its 5xx replies
permanent. SMTP has no idempotency key: when the connection drops after the message's final
dot and before the relay's answer, the step cannot know whether the relay took it, and the
retry sends it again. The Message-ID is the same on every attempt (derived from the step's
idempotency key), so a receiving system that deduplicates on it can drop the copy; most
mailboxes do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import aiosmtplib
import httpx

from flowyard.domain.credentials import ResolvedCredential
from flowyard.domain.egress import IPAddress
from flowyard.domain.errors import PermanentError, TransientError
from flowyard.outbound import allowed_addresses, check_origin, policy_of

#: The implicit-TLS submission port (RFC 8314): TLS from the first byte.
IMPLICIT_TLS_PORT = 465
#: How long QUIT may take once the message is accepted.
QUIT_TIMEOUT_S = 5.0
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


@dataclass(frozen=True, slots=True)
class SmtpResult:
    """What the relay accepted and refused (address -> its code and message)."""

    accepted: list[str]
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)


class TlsContexts:
    """The client TLS context, built once per trust store. Verification is always on; the
    trust store is the HTTP client's (``httpx.create_ssl_context``): ``SSL_CERT_FILE`` or
    ``SSL_CERT_DIR`` when set, else certifi's bundle. An operator with a private CA (or a
    test with its own) sets them for the process, as for HTTPS."""

    def __init__(self) -> None:
        self._cached: tuple[tuple[str | None, str | None], ssl.SSLContext] | None = None

    def get(self) -> ssl.SSLContext:
        """The context for the trust store the environment names now."""
        key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, httpx.create_ssl_context())
        return self._cached[1]


def relay_url(host: str, port: int) -> httpx.URL:
    """The relay as an origin-shaped URL (``smtp://host:port``) for the origin check."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return httpx.URL(f"smtp://{shown}:{port}")


def is_loopback_host(host: str) -> bool:
    """Whether the host as written is this machine (no DNS: a name is trusted only if it is
    ``localhost``)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _connect(addresses: Sequence[IPAddress], port: int) -> socket.socket:
    """A connected non-blocking socket to the first of ``addresses`` that answers."""
    loop = asyncio.get_running_loop()
    error: OSError | None = None
    for ip in addresses:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (str(ip), port))
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error if error is not None else OSError("no address to connect to")


@dataclass(eq=False, slots=True)
class _Idle:
    """A connection that sent its last message and waits for the next."""

    client: aiosmtplib.SMTP
    #: When it went idle (the loop's clock).
    since: float
    #: Messages it has sent.
    sent: int


class SmtpPool:
    """The process's idle SMTP connections, per relay and login: the next message to the
    same relay with the same credential takes one instead of paying for TCP, STARTTLS and
    AUTH again (a campaign's thousands of messages, a handful of connections).

    A connection is reused only by the credential it was opened for (its key holds a digest
    of the credential's values: an edited password or host opens new ones), only on the
    event loop it belongs to, only while younger than ``idle_s`` (relays drop idle clients,
    commonly after a minute or more), and for at most ``max_messages`` messages. A reused
    connection is checked with ``RSET`` first; one the relay closed meanwhile is dropped and
    a new one opened, before anything of the message was sent. Any failure closes the
    connection instead of returning it."""

    def __init__(self, *, max_idle: int = 8, idle_s: float = 30.0, max_messages: int = 100):
        self.max_idle = max_idle
        self.idle_s = idle_s
        self.max_messages = max_messages
        self._idle: dict[tuple[Any, ...], list[_Idle]] = {}

    @staticmethod
    def key(credential: ResolvedCredential, host: str, port: int) -> tuple[Any, ...]:
        """Where a connection may be reused: this relay, this login, this event loop."""
        values = json.dumps(credential.values, sort_keys=True, default=str).encode()
        digest = hashlib.sha256(values).hexdigest()
        return (credential.name, host, port, digest, id(asyncio.get_running_loop()))

    async def take(self, key: tuple[Any, ...]) -> _Idle | None:
        """A live idle connection for ``key``, the most recently used first (stale ones are
        closed), or None. ``RSET`` proves it live: a relay that closed it meanwhile costs a
        round trip here, not the message."""
        idle = self._idle.get(key)
        while idle:
            found = idle.pop()
            fresh = asyncio.get_running_loop().time() - found.since < self.idle_s
            if fresh and found.client.is_connected:
                try:
                    await found.client.rset()
                except (aiosmtplib.SMTPException, OSError):
                    pass
                else:
                    return found
            found.client.close()
        return None

    async def give_back(self, key: tuple[Any, ...], client: aiosmtplib.SMTP, sent: int) -> None:
        """Keep ``client`` for the next message, or say goodbye when it has sent enough or
        enough others wait."""
        idle = self._idle.setdefault(key, [])
        if sent >= self.max_messages or len(idle) >= self.max_idle or not client.is_connected:
            await _quit(client, QUIT_TIMEOUT_S)
            return
        idle.append(_Idle(client, asyncio.get_running_loop().time(), sent))

    async def aclose(self) -> None:
        """Say goodbye on every idle connection of this event loop; drop the others."""
        loop = id(asyncio.get_running_loop())
        pools, self._idle = self._idle, {}
        for key, idle in pools.items():
            for found in idle:
                if key[-1] == loop:
                    await _quit(found.client, 1.0)
                else:
                    found.client.close()


async def send_smtp(
    http: httpx.AsyncClient,
    credential: ResolvedCredential,
    sender: str,
    recipients: list[str],
    raw: bytes,
    *,
    timeout_s: float,
    tls: ssl.SSLContext,
    local_hostname: str,
    pool: SmtpPool | None = None,
) -> SmtpResult:
    """Send ``raw`` from ``sender`` to ``recipients`` through the credential's relay (on a
    connection of ``pool`` when it has one); every failure is a classified TransientError or
    PermanentError (``email.*``)."""
    values = credential.values
    host = str(values["host"])
    port = int(values.get("port") or 587)
    implicit = port == IMPLICIT_TLS_PORT
    starttls = bool(values.get("starttls", True)) and not implicit
    username, password = values.get("username"), values.get("password")
    login = username is not None and password is not None
    check_origin(credential, relay_url(host, port))
    if login and not (implicit or starttls) and not is_loopback_host(host):
        raise PermanentError(
            f"credential {credential.name!r} would send its password to {host}:{port} "
            "unencrypted: set starttls (or use port 465)",
            error_type="email.insecure",
            details={"host": host, "port": port},
        )
    where = f"{host}:{port}"
    key = pool.key(credential, host, port) if pool is not None else None

    async def connect() -> aiosmtplib.SMTP:
        addresses = await allowed_addresses(policy_of(http), host, port, timeout=timeout_s)
        sock = await _connect(addresses, port)
        try:
            client = aiosmtplib.SMTP(
                hostname=host,
                sock=sock,
                use_tls=implicit,
                start_tls=starttls,
                tls_context=tls,
                timeout=timeout_s,
                local_hostname=local_hostname,
                username=str(username) if login else None,
                password=str(password) if login else None,
            )
        except BaseException:
            sock.close()
            raise
        # From here the connection's transport owns the socket and closes it (closing it
        # here too would free its descriptor while a TLS shutdown still uses it).
        try:
            await client.connect()
        except BaseException:
            client.close()
            raise
        return client

    try:
        async with asyncio.timeout(timeout_s):
            found = await pool.take(key) if pool is not None and key is not None else None
            client = found.client if found is not None else await connect()
            sent = found.sent if found is not None else 0
            try:
                errors, _ = await client.sendmail(sender, recipients, raw)
            except BaseException:
                client.close()
                raise
    except TimeoutError as exc:
        if isinstance(exc, aiosmtplib.SMTPException):
            _raise(exc, where)
        raise TransientError(
            f"SMTP to {where} timed out (timeout_s {timeout_s})", error_type="email.timeout"
        ) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        _raise(exc, where)
    # Outside the deadline: the message is accepted, and a goodbye that fails or hangs must
    # not turn that into a timeout (whose retry would send the message again).
    if pool is not None and key is not None:
        await pool.give_back(key, client, sent + 1)
    else:
        await _quit(client, min(QUIT_TIMEOUT_S, timeout_s))
    refused = {addr: {"code": r.code, "message": r.message} for addr, r in errors.items()}
    return SmtpResult([r for r in recipients if r not in refused], refused)


async def _quit(client: aiosmtplib.SMTP, timeout_s: float) -> None:
    """Say goodbye (briefly) and close the connection, whatever the relay does."""
    try:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            async with asyncio.timeout(timeout_s):
                await client.quit()
    finally:
        client.close()


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _raise(exc: BaseException, where: str) -> NoReturn:
    """The classified error of an SMTP failure."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = {r.recipient: {"code": r.code, "message": r.message} for r in exc.recipients}
        details: dict[str, Any] = {"refused": refused}
        if all(400 <= r.code < 500 for r in exc.recipients):
            code = exc.recipients[0].code
            raise TransientError(
                f"{where} refused every recipient for now ({code})",
                error_type=f"email.smtp_{code}",
                details=details,
            ) from None
        raise PermanentError(
            f"{where} refused every recipient: {', '.join(refused)}",
            error_type="email.recipients_refused",
            details=details,
        ) from None
    if isinstance(exc, aiosmtplib.SMTPResponseException) and not 200 <= exc.code < 600:
        # aiosmtplib's code for a reply that is not SMTP (a malformed or endless line): the
        # relay is something else, or broken; trying again will not change it.
        raise PermanentError(
            f"{where} did not answer in SMTP: {exc.message[:200]}",
            error_type="email.smtp_protocol",
            details={"reason": exc.message[:200]},
        ) from None
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = exc.code
        message = f"{where} answered {code} {exc.message}".strip()
        reply = {"code": code, "message": exc.message}
        if 400 <= code < 500:
            raise TransientError(message, error_type=f"email.smtp_{code}", details=reply) from None
        raise PermanentError(message, error_type=f"email.smtp_{code}", details=reply) from None
    tls = _tls_failure(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        raise PermanentError(
            f"{where}: the relay's TLS certificate is not trusted: {tls.verify_message}",
            error_type="email.tls",
            details={"reason": str(tls.verify_message)},
        ) from None
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        raise TransientError(f"SMTP to {where} timed out: {exc}", error_type="email.timeout")
    if isinstance(exc, ConnectionError | OSError) or tls is not None:
        raise TransientError(
            f"SMTP to {where} failed: {exc.__class__.__name__}: {exc}",
            error_type="email.network",
        ) from None
    # STARTTLS or AUTH not offered, no usable AUTH mechanism: the relay's setup.
    raise PermanentError(
        f"{where}: {exc}", error_type="email.smtp_unsupported", details={"reason": str(exc)}
    ) from None
