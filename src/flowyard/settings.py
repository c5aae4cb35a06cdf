"""Settings from flags and ``FLOWYARD_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a flowyard process. Built once per process and passed down."""

    model_config = SettingsConfigDict(env_prefix="FLOWYARD_", extra="ignore")

    db_url: str = Field("sqlite:///./flowyard.db", description="sqlite:///path or postgresql://...")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=0, le=64, description="In-process workers started by 'serve'.")
    concurrency: int = Field(32, ge=1, le=10_000, description="Concurrent steps per worker.")
    lease_s: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(0.25, gt=0)
    reap_interval_s: float = Field(5.0, gt=0)
    max_recoveries: int = Field(3, ge=0)
    shutdown_grace_s: float = Field(30.0, ge=0)
    db_pool_size: int = Field(10, ge=1, le=200)
    load_samples: bool = Field(False, description="Load examples/*.json at start ('make run').")
    samples_dir: str = "examples"
    max_request_bytes: int = Field(5 * 1024 * 1024, ge=1024)
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
    stream_poll_interval_s: float = Field(
        0.25, gt=0, description="How often streams poll for events without LISTEN (SQLite)."
    )
    stream_auth_timeout_s: float = Field(
        1.0, gt=0, description="How long a websocket may take to send its token message."
    )
    secret_key: SecretStr | None = Field(
        None, description="Master key (base64 or hex, >= 32 bytes); else the key file is used."
    )
    key_file: str | None = Field(
        None, description="Master key file (default: next to a SQLite file, or ./flowyard.key)."
    )
    access_token_ttl_s: int = Field(900, ge=10, description="Lifetime of access tokens.")
    refresh_token_ttl_s: int = Field(14 * 24 * 3600, ge=60, description="Refresh tokens.")
    admin_password: SecretStr | None = Field(
        None, description="Password of the admin created at first start (else random, printed)."
    )
    metrics_require_auth: bool = Field(False, description="Require a token for GET /metrics.")
