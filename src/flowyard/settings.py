"""Settings from flags and ``FLOWYARD_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
import sqlalchemy as sa
from limits import parse_many
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.exc import ArgumentError


class MetricsAccess(StrEnum):
    """Who may read ``GET /metrics`` without a token (a viewer token always may)."""

    LOOPBACK = "loopback"
    TOKEN = "token"
    PUBLIC = "public"


# -- firsthour: one default database location (the platform's data directory) --
def data_dir() -> Path:
    """Where flowyard keeps its files unless told otherwise: the platform's user data
    directory (``$XDG_DATA_HOME/flowyard``, by default ``~/.local/share/flowyard`` on Linux)."""
    return Path(platformdirs.user_data_dir("flowyard", appauthor=False))


def default_db_url() -> str:
    """The database used when neither ``--db``, ``FLOWYARD_DB`` nor ``FLOWYARD_DB_URL`` is
    given: ``flowyard.db`` in :func:`data_dir`, wherever the command runs."""
    return f"sqlite:///{data_dir() / 'flowyard.db'}"


# -- database URLs as shown to people: never with a password --
#: Query parameters that may carry a secret (libpq's and asyncpg's names).
_SECRET_PARAMS = frozenset({"password", "sslpassword", "passfile", "sslkey"})


def display_url(url: str) -> str:
    """``url`` without its password (or password-like query parameters) and without the
    async driver name: ``postgresql://postgres@db/flowyard``, ``sqlite:////path/flowyard.db``."""
    if "://" not in url:
        return url
    try:
        parsed = sa.make_url(url)
        parsed.port  # noqa: B018 - parsed when read: "host:notaport" raises here
    except (ArgumentError, ValueError, TypeError):
        return url.split("://", 1)[0] + "://..."
    parsed = parsed.set(drivername=parsed.get_backend_name(), password=None)
    query = {k: v for k, v in parsed.query.items() if k.lower() not in _SECRET_PARAMS}
    return parsed.set(query=query).render_as_string(hide_password=True)


def url_password(url: str) -> str | None:
    """The password in ``url``'s userinfo, as written (None without one), found without
    parsing the rest: for keeping it out of messages about a URL that does not parse."""
    if "://" not in url:
        return None
    authority = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    if "@" not in authority:
        return None
    return authority.rsplit("@", 1)[0].partition(":")[2] or None


class Settings(BaseSettings):
    """Every knob of a flowyard process. Built once per process and passed down."""

    model_config = SettingsConfigDict(env_prefix="FLOWYARD_", extra="ignore", validate_by_name=True)

    db_url: str = Field(
        default_factory=default_db_url,
        # FLOWYARD_DB is the short name; FLOWYARD_DB_URL stays accepted (FLOWYARD_DB wins).
        validation_alias=AliasChoices("FLOWYARD_DB", "FLOWYARD_DB_URL"),
        description="sqlite:///path, a file path, or postgresql://... "
        "(default: flowyard.db in the data directory)",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=0, le=64, description="In-process workers started by 'serve'.")
    concurrency: int = Field(32, ge=1, le=10_000, description="Concurrent steps per worker.")
    lease_s: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(0.25, gt=0)
    reap_interval_s: float = Field(5.0, gt=0)
    scheduler: bool = Field(
        True, description="Every worker also fires due schedules (each tick exactly once)."
    )
    schedule_poll_s: float = Field(
        1.0, gt=0, le=60, description="Longest sleep of a worker's scheduler between due reads."
    )
    schedule_fires_keep_s: float = Field(
        7 * 86400, ge=3600, description="How long fired ticks are kept as history."
    )
    max_recoveries: int = Field(3, ge=0)
    shutdown_grace_s: float = Field(30.0, ge=0)
    db_pool_size: int = Field(10, ge=1, le=200)
    db_pooler: Literal["none", "transaction"] = Field(
        "none",
        description=(
            "PostgreSQL: 'transaction' when db_url goes through a pooler in transaction mode "
            "(PgBouncer pool_mode=transaction): no prepared statement outlives its "
            "transaction, reads run in transactions, and live streams LISTEN on "
            "db_listen_url (or poll)."
        ),
    )
    db_listen_url: str | None = Field(
        None,
        description=(
            "PostgreSQL: a direct URL for LISTEN/NOTIFY when db_url goes through a "
            "transaction pooler (a pooler cannot keep a LISTEN); unset: streams poll."
        ),
    )
    load_samples: bool = Field(False, description="Load examples/*.json at start ('make run').")
    samples_dir: str = "examples"
    max_request_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    #: The body of ``POST /campaigns`` (its items: a JSON array, NDJSON or CSV).
    max_campaign_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_output_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024 * 1024,
        description="Largest result a step may store, as JSON text (more: output.too_large). "
        "Above the http node's default response limit (10 MiB) plus JSON escaping.",
    )
    log_level: str = "INFO"
    load_plugins: bool = True
    expression_timeout_s: float = Field(1.0, gt=0)
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at GET /metrics.")
    metrics_host: str = Field(
        "127.0.0.1", description="Bind address of a standalone worker's --metrics-port server."
    )
    metrics_queue_depth_ttl_s: float = Field(
        5.0, gt=0, description="Queue-depth gauge: seconds between database counts."
    )
    stream_queue_size: int = Field(
        1000, ge=1, le=100_000, description="Events buffered per websocket client."
    )
    stream_slow_client_s: float = Field(
        2.0, gt=0, description="A client whose buffer stays full this long is closed (1013)."
    )
    draft_history: int = Field(
        100, ge=1, le=10_000, description="Undo steps kept per draft (the oldest are dropped)."
    )
    stream_poll_interval_s: float = Field(
        0.25, gt=0, description="How often streams poll for events without LISTEN (SQLite)."
    )
    stream_auth_timeout_s: float = Field(
        1.0, gt=0, description="How long a websocket may take to send its token message."
    )
    stream_reauth_interval_s: float = Field(
        30.0,
        gt=0,
        description="Open streams re-check their token this often: a disabled user, revoked "
        "key (1008) or expired token (4401) is disconnected.",
    )
    secret_key: SecretStr | None = Field(
        None, description="Master key (base64 or hex, >= 32 bytes); else the key file is used."
    )
    key_file: str | None = Field(
        None,
        description="Master key file (default: next to a SQLite file, else flowyard.key in "
        "the data directory).",
    )
    previous_secret_keys: SecretStr | None = Field(
        None,
        description="Comma-separated former master keys: credentials still encrypted under "
        "them stay readable (during a key rotation).",
    )
    credential_cache_ttl_s: float = Field(
        5.0, ge=0, description="Workers cache decrypted credentials this long (0: never)."
    )
    access_token_ttl_s: int = Field(900, ge=10, description="Lifetime of access tokens.")
    refresh_token_ttl_s: int = Field(14 * 24 * 3600, ge=60, description="Refresh tokens.")
    session_max_age_s: int = Field(
        30 * 24 * 3600,
        ge=60,
        description="A session ends this long after its login however often it is refreshed "
        "(its refresh is then refused, 401, like an expired token): log in again.",
    )
    admin_password: SecretStr | None = Field(
        None, description="Password of the admin created at first start (else random, printed)."
    )
    metrics_require_auth: bool | None = Field(
        None, description="Deprecated: true is metrics_access=token, false is public."
    )
    # -- rate limits, login throttling, CORS (docs/operations.md "Rate limits and CORS") --
    rate_limit_enabled: bool = Field(True, description="Limit API requests (429 over a limit).")
    rate_limit_per_ip: str = Field(
        "1200/minute", description="Requests per client address, e.g. '20/second;1200/minute'."
    )
    rate_limit_per_principal: str = Field(
        "600/minute", description="Requests per presented bearer token or API key."
    )
    hook_rate_limit: str = Field(
        "20/second;600/minute",
        description="Deliveries per webhook trigger (a hook's rate_limit overrides it).",
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The API's public base URL as senders see it (https://flows.example.com): "
        "Twilio signs the URL it posts to, which a proxy changes.",
    )
    rate_limit_storage: str = Field(
        "memory://", description="limits storage: memory:// (per process) or redis://host:port."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Proxy addresses/networks whose X-Forwarded-For names the client.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (none: no CORS headers)."
    )
    cors_allow_credentials: bool = Field(False, description="CORS: allow cookies/credentials.")
    # -- outbound: egress policy of node requests (docs/security.md "Egress") --
    egress_policy: Literal["deny_private", "allow_all"] = Field(
        "deny_private",
        description="deny_private: outbound requests may not connect to loopback, private, "
        "link-local, multicast or reserved addresses (checked after DNS, on every redirect); "
        "allow_all: no check.",
    )
    egress_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts the operator trusts despite deny_private (comma list or JSON): "
        "host names, host:port, IP addresses or CIDR networks.",
    )
    # -- auth: login throttling and password strength (notes/auth.md) --
    # Replaces login_max_failures / login_max_failures_per_ip (a 15-minute lockout).
    login_free_failures: int = Field(
        3, ge=0, description="Failed logins of one username from one address before backoff."
    )
    login_free_failures_per_ip: int = Field(
        20, ge=0, description="Failed logins from one address (any username) before backoff."
    )
    login_backoff_base_s: float = Field(
        1.0, gt=0, description="First backoff wait; it doubles with every further failure."
    )
    login_backoff_max_s: float = Field(
        5.0,
        ge=0,
        le=60,
        description="Longest backoff wait (0: no login throttling). A correct password is "
        "never refused longer than this after the client's last attempt.",
    )
    login_failure_window_s: int = Field(
        900, ge=1, description="Failed logins are forgotten this long after the last attempt."
    )
    client_ipv6_prefix: int = Field(
        64,
        ge=1,
        le=128,
        description="Login throttling counts an IPv6 client per network of this many bits "
        "(one subscriber or cloud instance holds a whole /64); IPv4 clients per address.",
    )
    password_min_score: int = Field(
        3, ge=0, le=4, description="zxcvbn strength (0-4) a new password needs (0: length only)."
    )
    # -- expr: expression budgets, compile budget, compile concurrency (notes/expr.md) --
    # (FLOWYARD_EXPRESSION_TIMEOUT_S, above, is the wall-clock budget of one evaluation.)
    expression_max_output_chars: int = Field(
        1_000_000,
        ge=1,
        description="Largest value an expression may produce or return, measured deep "
        "(characters of its compact JSON), and longest rendered text.",
    )
    expression_max_total_chars: int = Field(
        5_000_000,
        ge=1,
        description="Total size of all values one evaluation produces (one node's templates).",
    )
    expression_max_operations: int = Field(
        5_000_000, ge=1, description="Operations (lookups, calls, loop steps) per evaluation."
    )
    expression_threads: int = Field(
        4, ge=1, le=64, description="Threads evaluating expressions (never the event loop)."
    )
    expression_compile_budget_s: float = Field(
        5.0, gt=0, description="Time one definition's expressions may take to compile."
    )
    expression_max_templates: int = Field(
        5_000, ge=1, description="Expressions and templates one definition may hold."
    )
    expression_max_template_tokens: int = Field(
        20_000, ge=1, description="Tokens one expression or template may hold."
    )
    expression_compile_concurrency: int = Field(
        2, ge=1, le=64, description="Definitions compiled at once per process (validate/save)."
    )
    expression_compile_wait_s: float = Field(
        2.0, ge=0, description="How long a validate/save waits for a compile slot (then 503)."
    )

    # -- surface: who may read GET /metrics (docs/operations.md) --
    metrics_access: MetricsAccess | None = Field(
        None,
        description="GET /metrics without a token: 'loopback' (default: only clients on "
        "127.0.0.1/::1, behind trusted_proxies the forwarded client; others need a viewer "
        "token), 'token' (always a viewer token) or 'public' (anyone).",
    )

    @property
    def metrics_policy(self) -> MetricsAccess:
        """The effective ``metrics_access``: as set, else from the deprecated
        ``metrics_require_auth`` (true: token, false: public), else loopback."""
        if self.metrics_access is not None:
            return self.metrics_access
        if self.metrics_require_auth is not None:
            return MetricsAccess.TOKEN if self.metrics_require_auth else MetricsAccess.PUBLIC
        return MetricsAccess.LOOPBACK

    @model_validator(mode="after")
    def _one_metrics_access(self) -> Settings:
        """``metrics_access`` and the deprecated ``metrics_require_auth`` may not disagree."""
        if self.metrics_access is not None and self.metrics_require_auth is not None:
            implied = MetricsAccess.TOKEN if self.metrics_require_auth else MetricsAccess.PUBLIC
            if implied is not self.metrics_access:
                raise ValueError(
                    f"metrics_access={self.metrics_access.value} and metrics_require_auth="
                    f"{str(self.metrics_require_auth).lower()} disagree: set metrics_access only"
                )
        return self

    @field_validator("trusted_proxies", "cors_origins", "egress_allow", mode="before")
    @classmethod
    def _string_list(cls, value: Any) -> Any:
        """A JSON list or comma-separated values (environment variables are strings)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("rate_limit_per_ip", "rate_limit_per_principal", "hook_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        """A `limits` string: '600/minute', or several separated by ';'."""
        try:
            items = parse_many(value)
        except ValueError:
            items = []
        if not items or any(item.amount < 1 for item in items):
            raise ValueError(f"{value!r} is not a rate limit; write e.g. '600/minute'")
        return value
