"""Settings: one frozen pydantic-settings object per role, read once at start-up.

Every setting has an environment variable ``MXGATE_<SECTION>__<NAME>`` (for example
``MXGATE_KAFKA__BOOTSTRAP_SERVERS``). Roles receive their settings object; nothing deeper
reads the environment. The README's settings reference lists them all.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    """Where Kafka is and how topics are named."""

    model_config = ConfigDict(frozen=True)
    bootstrap_servers: str = Field(
        default="", description="Broker list; empty means `mxgate up` starts a local broker."
    )
    topic_prefix: str = Field(default="", description="Prefix on every topic name (isolation).")
    replication_factor: int = Field(default=1, ge=1, description="Replication of created topics.")
    partitions: int = Field(default=6, ge=1, description="Partitions of the message topics.")
    group_prefix: str = Field(default="mxgate", description="Prefix of consumer group ids.")
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="This process's stable name: transactional.id and static group membership "
        "derive from it, so a restarted instance fences its dead predecessor at once.",
    )
    session_timeout_ms: int = Field(
        default=45_000, ge=1_000, description="Consumer group session timeout."
    )
    transaction_timeout_ms: int = Field(
        default=60_000, ge=1_000, description="Kafka transaction timeout of scanner and deliverer."
    )


class StoreSettings(BaseModel):
    """The object store that holds message bodies."""

    model_config = ConfigDict(frozen=True)
    backend: Literal["fs", "s3"] = Field(default="fs", description="fs (embedded) or s3.")
    path: Path = Field(default=Path("var/store"), description="Root of the filesystem store.")
    s3_bucket: str = Field(default="mxgate", description="Bucket of message bodies.")
    s3_endpoint: str = Field(default="", description="S3 endpoint URL; empty for AWS.")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_access_key_id: str = Field(default="", description="S3 access key id.")
    s3_secret_access_key: str = Field(default="", description="S3 secret access key.")
    s3_prefix: str = Field(default="", description="Key prefix inside the bucket.")


class ReceiverSettings(BaseModel):
    """The SMTP front door."""

    model_config = ConfigDict(frozen=True)
    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str = Field(default="mxgate.local", description="Name in the banner and Received.")
    max_message_size: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(default=100, ge=1)
    data_timeout: float = Field(default=300.0, gt=0, description="Seconds for one session idle.")
    accept_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for store + Kafka before answering 451."
    )


class ScannerSettings(BaseModel):
    """The scanner group."""

    model_config = ConfigDict(frozen=True)
    engines: tuple[str, ...] = Field(
        default=("yara", "content"), description="Enabled engines, in report order."
    )
    engine_timeout: float = Field(default=20.0, gt=0, description="Seconds per engine per message.")
    batch_size: int = Field(default=50, ge=1, description="Messages per Kafka transaction.")
    yara_rules: Path | None = Field(default=None, description="YARA rules dir; default: packaged.")


class DelivererSettings(BaseModel):
    """The deliverer group."""

    model_config = ConfigDict(frozen=True)
    hostname: str = "mxgate.local"
    retry_schedule: tuple[float, ...] = Field(
        default=(60.0, 300.0, 900.0, 3600.0),
        description="Seconds before each retry tier; the last tier repeats until expiry.",
    )
    expire_after: float = Field(
        default=5 * 86400.0, description="Seconds until a deferral expires."
    )
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    batch_size: int = Field(default=50, ge=1)
    max_connections_per_route: int = Field(default=10, ge=1)
    state_path: Path = Field(default=Path("var/deliverer"), description="Local dedupe state.")


class Settings(BaseSettings):
    """All of mxgate's settings. Each role takes the sections it needs."""

    model_config = SettingsConfigDict(
        env_prefix="MXGATE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )
    tenants_file: Path = Field(
        default=Path("infra/tenants.toml"),
        description="TOML file of tenants (domains, route, policy).",
    )
    log_level: str = Field(default="info", description="debug | info | warning | error.")
    log_json: bool = Field(default=True, description="JSON log lines (false: console format).")
    metrics_port: int = Field(default=0, description="Prometheus port; 0 disables.")
    kafka: KafkaSettings = KafkaSettings()
    store: StoreSettings = StoreSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    scanner: ScannerSettings = ScannerSettings()
    deliverer: DelivererSettings = DelivererSettings()
