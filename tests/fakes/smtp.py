"""A local SMTP relay for the email node's tests: aiosmtpd's SMTP protocol on 127.0.0.1 (in
the test's event loop), with STARTTLS or implicit TLS (a certificate from a throwaway CA made
here with ``cryptography``), AUTH PLAIN/LOGIN against a user table, scripted replies per
command (``421`` then ``250``; ``550`` for one recipient; ``DROP`` hangs up without a
reply), and every accepted message captured with its envelope.

The node verifies TLS as it does in production; tests make it trust :attr:`TlsFiles.ca`
by pointing ``SSL_CERT_FILE`` at it (the same knob HTTPS honours)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import warnings
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Mode = Literal["plain", "starttls", "implicit"]


@dataclass(frozen=True)
class TlsFiles:
    """A CA certificate (what clients trust) and a server certificate and key it signed."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """The relay's TLS context."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls(directory: Path, ips: tuple[str, ...] = ("127.0.0.1",)) -> TlsFiles:
    """A throwaway CA and a server certificate for ``localhost`` and ``ips``, as PEM files
    in ``directory``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowyard test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@dataclass
class Received:
    """A message the relay accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None
    tls: bool

    @property
    def message(self) -> EmailMessage:
        """The message, parsed."""
        return cast(EmailMessage, message_from_bytes(self.data, policy=policy.default))


@dataclass
class _Handler:
    relay: FakeSmtp

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.relay._next("MAIL", server)
        if reply.startswith("250"):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return reply

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.relay.counts["RCPT"] += 1
        refused = self.relay.refused.get(address.lower())
        if refused is not None:
            return refused
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # A pooled client's check that its idle connection is alive; ``DROP`` makes it dead.
        return self.relay._next("RSET", server)

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.relay._next("QUIT", server, default="221 2.0.0 Bye")
        if reply == "HANG":
            await asyncio.Event().wait()  # until the client hangs up
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.relay._next("DATA", server)
        if reply.startswith("250"):
            self.relay.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    bytes(cast(bytes, envelope.original_content or envelope.content)),
                    cast(str | None, session.auth_data),
                    server.transport is not None
                    and server.transport.get_extra_info("ssl_object") is not None,
                )
            )
        return reply


class FakeSmtp:
    """An SMTP relay on 127.0.0.1 (port picked by the OS unless given)."""

    def __init__(
        self,
        *,
        mode: Mode = "starttls",
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        exclude_auth: tuple[str, ...] = (),
    ) -> None:
        if mode != "plain" and tls is None:
            raise ValueError(f"mode {mode} needs tls files")
        self.mode = mode
        self.tls = tls
        self.users = dict(users or {})
        self.host = host
        self._port = port
        #: AUTH mechanisms not offered (e.g. ("PLAIN",) to make clients use LOGIN).
        self.exclude_auth = exclude_auth
        self.received: list[Received] = []
        #: Scripted replies per command (MAIL, DATA), used in order before the default 250.
        self.scripts: dict[str, list[str]] = {}
        #: Recipients refused, lower-case address -> reply.
        self.refused: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        #: Logins tried: (mechanism, login, accepted).
        self.logins: list[tuple[str, str, bool]] = []
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def script(self, command: str, replies: list[str]) -> None:
        """Answer the next ``command``s with ``replies`` (then 250 again); ``DROP`` closes
        the connection instead of answering, ``TAKE_AND_DROP`` (DATA) keeps the message
        and closes the connection before the reply, ``HANG`` (QUIT) never answers."""
        self.scripts.setdefault(command.upper(), []).extend(replies)

    def refuse(self, address: str, reply: str = "550 5.1.1 User unknown") -> None:
        """Refuse ``address`` at RCPT TO."""
        self.refused[address.lower()] = reply

    def _next(self, command: str, server: SMTP, default: str = "250 2.0.0 OK") -> str:
        self.counts[command] += 1
        queue = self.scripts.get(command)
        reply = queue.pop(0) if queue else default
        if reply in ("DROP", "TAKE_AND_DROP"):
            assert server.transport is not None
            server.transport.abort()
            # TAKE_AND_DROP: the message is kept, the reply lost (the client cannot know).
            return "250 2.0.0 (never seen)" if reply == "TAKE_AND_DROP" else "421 (never seen)"
        return reply

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        ok = self.users.get(login) == password
        self.logins.append((mechanism, login, ok))
        # handled=False: aiosmtpd answers (235, or 535 on a failure) itself.
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def _protocol(self) -> SMTP:
        self.counts["connections"] += 1
        tls = self.tls.server_context() if self.tls is not None else None
        with warnings.catch_warnings():
            # aiosmtpd warns that AUTH without STARTTLS is unsafe; under implicit TLS (and
            # in the plain mode tests of the node's own refusal) that is the point.
            warnings.simplefilter("ignore")
            return SMTP(
                _Handler(self),
                hostname="fake-smtp.test",
                tls_context=tls if self.mode == "starttls" else None,
                require_starttls=self.mode == "starttls",
                authenticator=self._authenticate if self.users else None,
                auth_required=bool(self.users),
                auth_require_tls=self.mode == "starttls",
                auth_exclude_mechanism=self.exclude_auth,
                loop=asyncio.get_running_loop(),
            )

    async def start(self) -> FakeSmtp:
        """Listen (implicit TLS: TLS from the first byte)."""
        ssl_context = None
        if self.mode == "implicit":
            assert self.tls is not None
            ssl_context = self.tls.server_context()
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self.host, self._port, ssl=ssl_context
        )
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class Relays:
    """Relays a test started (stopped at its end)."""

    started: list[FakeSmtp] = field(default_factory=list)

    async def start(self, **kwargs: Any) -> FakeSmtp:
        relay = await FakeSmtp(**kwargs).start()
        self.started.append(relay)
        return relay

    async def stop(self) -> None:
        for relay in self.started:
            await relay.stop()
