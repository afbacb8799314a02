"""Settings: one frozen pydantic-settings object per role, read once at start-up.

Every setting has an environment variable ``MXGATE_<SECTION>__<NAME>`` (for example
``MXGATE_KAFKA__BOOTSTRAP_SERVERS``). Roles receive their settings object; nothing deeper
reads the environment. The README's settings reference lists them all.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


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
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Failed attempts of a batch before it is split and the record that still "
        "fails alone goes to mxgate.deadletter.v1 (store or broker outages do not count).",
    )
    retry_backoff: float = Field(
        default=1.0,
        gt=0,
        description="Seconds before a failed batch is tried again (doubling, at most 30).",
    )
    schema_retry: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between rereads of the schemas while a partition waits on a record "
        "of an unknown writer schema (it is never skipped).",
    )
    schema_dirs: tuple[Path, ...] = Field(
        default=(),
        description="Extra folders of self-contained writer schemas (.avsc) that consumers learn "
        "newer event versions from without a restart.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How clients reach the brokers: PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL.",
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism (with a SASL_* protocol)."
    )
    sasl_username: str = Field(
        default="", description="SASL user: this role's principal (e.g. mxgate-receiver)."
    )
    sasl_password: SecretStr = Field(
        default=SecretStr(""), description="SASL password (never logged or shown)."
    )
    ssl_ca_location: Path | None = Field(
        default=None, description="PEM CA file the brokers' certificates are checked against."
    )
    ssl_certificate_location: Path | None = Field(
        default=None, description="PEM client certificate (mutual TLS; with ssl_key_location)."
    )
    ssl_key_location: Path | None = Field(
        default=None, description="PEM private key of the client certificate (mutual TLS)."
    )
    control_key: SecretStr = Field(
        default=SecretStr(""),
        description="HMAC-SHA-256 key signing engine switches on the control topic; scanners "
        "with a key ignore unsigned or badly signed switches (empty: unsigned, with a warning).",
    )
    control_key_id: str = Field(
        default="1",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Id of control_key, sent with every signed switch (header mxgate-key-id) so "
        "verifiers know which key to check it with; a new key gets a new id.",
    )
    control_keys_previous: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Earlier control keys by id, as JSON ({"1": "old key"}): switches signed '
        "with them still count while they are listed (rotation); a switch under an id neither "
        "here nor control_key_id is ignored and counted (never logged or shown).",
    )

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            if not self.sasl_username:
                raise ValueError(f"sasl_username is required with {self.security_protocol}")
            if not self.sasl_password.get_secret_value():
                raise ValueError(f"sasl_password is required with {self.security_protocol}")
        for key in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            path = getattr(self, key)
            if path is not None and not path.is_file():
                raise ValueError(f"{key}: no such file {path}")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together (mTLS)")
        for kid, secret in self.control_keys_previous.items():
            if not _KEY_ID.fullmatch(kid):
                raise ValueError(f"control_keys_previous: bad key id {kid!r} (A-Z a-z 0-9 . _ -)")
            if kid == self.control_key_id:
                raise ValueError(f"control_keys_previous: {kid!r} is control_key_id's own id")
            if not secret.get_secret_value():
                raise ValueError(f"control_keys_previous: key {kid!r} is empty")
        if self.control_keys_previous and not self.control_key.get_secret_value():
            raise ValueError("control_keys_previous needs control_key (the current key)")
        return self


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
    """The SMTP front door: protocol, limits, TLS, PROXY, DNSBL and recipient verification."""

    model_config = ConfigDict(frozen=True)
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=2525, ge=0, le=65535, description="SMTP port to listen on.")
    hostname: str = Field(default="mxgate.local", description="Name in the banner and Received.")
    workers: int = Field(
        default=1, ge=1, le=64, description="Receiver processes sharing the port (SO_REUSEPORT)."
    )
    max_message_size: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="Bytes; larger gets 552 5.3.4."
    )
    max_recipients: int = Field(
        default=100, ge=1, description="Recipients per message; more get 452 4.5.3."
    )
    max_line_length: int = Field(
        default=8192,
        ge=1000,
        description="Bytes per DATA line incl. CRLF; longer gets 500 5.5.6 (RFC 5321: 1000).",
    )
    max_bad_commands: int = Field(
        default=10, ge=1, description="Unknown or malformed commands before 421 4.7.0 and close."
    )
    command_timeout: float = Field(
        default=300.0, gt=0, description="Seconds idle waiting for a command before 421 4.4.2."
    )
    data_timeout: float = Field(
        default=600.0, gt=0, description="Seconds for a whole DATA/BDAT body before 421 4.4.2."
    )
    accept_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for store + Kafka before answering 451."
    )
    max_connections: int = Field(
        default=1000, ge=1, description="Concurrent connections overall; more get 421 4.7.0."
    )
    max_connections_per_ip: int = Field(
        default=50, ge=1, description="Concurrent connections per client IP; more get 421 4.7.0."
    )
    connection_rate_per_ip: int = Field(
        default=600, ge=1, description="Connections per client IP per minute; more get 421 4.7.0."
    )
    message_rate_per_ip: int = Field(
        default=1200, ge=1, description="Messages (MAIL) per client IP per minute; more get 451."
    )
    max_inflight: int = Field(
        default=256,
        ge=1,
        description="Bodies being received or made durable at once (backpressure); a slot is "
        "taken when the first body line arrives, not at DATA; more get 451 4.3.2.",
    )
    max_inflight_per_ip: int = Field(
        default=20,
        ge=1,
        description="Bodies in flight from one client IP; more get 451 4.7.1 (slow senders on a "
        "few IPs cannot take every slot).",
    )
    max_inflight_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description="Bytes of all bodies in flight across sessions (spooled to the store as "
        "they arrive); over it a body gets 451 4.3.1. At least max_message_size.",
    )
    min_data_rate: int = Field(
        default=1000,
        ge=0,
        description="Bytes/s a DATA body must average over each min_data_rate_window; slower "
        "gets 451 4.4.2 and the connection closed (0: off).",
    )
    min_data_rate_window: float = Field(
        default=30.0, gt=0, description="Seconds over which min_data_rate is measured."
    )
    drain_timeout: float = Field(
        default=60.0, gt=0, description="Seconds SIGTERM waits for open transactions to finish."
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) for STARTTLS; reloaded without a restart when the "
        "file changes (the old one serves on if the new pair does not load). `mxgate up` "
        "generates a self-signed one at first start.",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key for STARTTLS.")
    proxy_protocol: bool = Field(
        default=False,
        description="Expect a PROXY v1/v2 header on every connection from a trusted proxy "
        "(receiver.proxy_trusted, required then); a connection from a trusted proxy without "
        "one is closed, a PROXY header from any other peer is refused (554 5.7.0).",
    )
    proxy_trusted: tuple[str, ...] = Field(
        default=(),
        description="CIDRs of the load balancers whose PROXY header is believed, e.g. "
        '["10.0.0.0/24"]. Other peers are served as themselves.',
    )
    proxy_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for the PROXY header."
    )
    dnsbl_zones: tuple[str, ...] = Field(
        default=(), description="DNSBL zones queried at connect (empty: off)."
    )
    dnsbl_threshold: int = Field(
        default=1, ge=1, description="Listings in that many zones reject with 554 5.7.1."
    )
    dnsbl_timeout: float = Field(
        default=2.0, gt=0, description="Seconds per DNSBL lookup; a failure never blocks mail."
    )
    dns_servers: tuple[str, ...] = Field(
        default=(), description="Resolvers as ip or ip:port; empty: the system's."
    )
    recipient_cache: Path = Field(
        default=Path("var/receiver/recipients"),
        description="rocksdict directory of recipient-callout results (one per worker).",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of the metrics port.")

    @field_validator("proxy_trusted")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as e:
                raise ValueError(f"proxy_trusted: {cidr!r} is not a CIDR ({e})") from e
        return value

    @model_validator(mode="after")
    def _proxies_named(self) -> ReceiverSettings:
        # Believing a PROXY header from anyone lets any client choose its own address.
        if self.proxy_protocol and not self.proxy_trusted:
            raise ValueError("proxy_protocol needs proxy_trusted: the CIDRs of the proxies")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> ReceiverSettings:
        # One without the other would silently offer no STARTTLS.
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _budget_holds_one_message(self) -> ReceiverSettings:
        """A byte budget below the message size would defer every large message forever."""
        if self.max_inflight_bytes < self.max_message_size:
            raise ValueError(
                f"max_inflight_bytes ({self.max_inflight_bytes}) must be at least "
                f"max_message_size ({self.max_message_size})"
            )
        return self


DEFAULT_ENGINES: tuple[str, ...] = (
    # antivirus and attachment policy
    "clamav",
    "yara",
    "attachments",
    "office",
    "pdf",
    # antispam, in-process (bayes abstains until `mxgate train` has taught it)
    "content",
    "heuristics",
    "bayes",
    # sender authentication
    "spf",
    "dkim",
    "dmarc",
    "arc",
)
"""What ``scanner.engines`` enables unless set: every engine that needs no extra service
besides clamd (spamd, rspamd, DNSBL, reputation and the sandbox are opted into)."""


class AuthSettings(BaseModel):
    """Sender authentication (SPF, DKIM, DMARC, ARC), the scanner's DNS, and BATV."""

    model_config = ConfigDict(frozen=True)
    dns_servers: tuple[str, ...] = Field(
        default=(), description="Scanner engines' resolvers, ip or ip:port; empty: the system's."
    )
    dns_timeout: float = Field(
        default=3.0, gt=0, description="Seconds per DNS lookup; a failure is a temperror finding."
    )
    dns_cache_size: int = Field(default=10_000, ge=0, description="DNS answers cached (by TTL).")
    authserv_id: str = Field(
        default="mxgate.local", description="Our name in Authentication-Results headers."
    )
    dkim_min_key_bits: int = Field(
        default=1024, ge=512, description="RSA DKIM/ARC keys shorter than this fail."
    )
    batv_keys: tuple[str, ...] = Field(
        default=(),
        description="BATV prvs= secrets, newest first (key number = index); empty: no backscatter "
        "check.",
    )
    batv_max_age_days: int = Field(
        default=7, ge=1, le=999, description="Days a prvs= tag stays valid."
    )
    batv_domains: tuple[str, ...] = Field(
        default=(),
        description="Tenant domains that sign outbound mail with BATV (bounces to them need a "
        "valid tag); empty: every domain, once batv_keys is set.",
    )


class SpamSettings(BaseModel):
    """The antispam engines: in-process Bayes, heuristics, DNSBL/URIBL, spamd and rspamd."""

    model_config = ConfigDict(frozen=True)
    bayes_path: Path = Field(
        default=Path("var/bayes"), description="rocksdict directory of Bayes token counts."
    )
    bayes_min_trained: int = Field(
        default=50, ge=0, description="Bayes answers 'skipped' until it learnt this many of each."
    )
    model_path: Path = Field(
        default=Path("var/spam-model.json"),
        description="The spam combiner model `mxgate train` writes; none: the score rule.",
    )
    heuristics_file: Path | None = Field(
        default=None, description="TOML table of heuristic rules and scores; default: packaged."
    )
    dnsbl_zones: tuple[str, ...] = Field(
        default=(), description="IP DNSBL zones the scanner queries for the client IP."
    )
    uribl_zones: tuple[str, ...] = Field(
        default=(), description="URI blocklist zones queried for domains of links in the body."
    )
    dnsbl_score: float = Field(default=3.0, description="Score per DNSBL/URIBL listing.")
    spamd_host: str = Field(default="127.0.0.1", description="SpamAssassin spamd address.")
    spamd_port: int = Field(default=783, ge=1, le=65535, description="spamd TCP port.")
    spamd_user: str = Field(default="mxgate", description="User spamd scans (and learns) as.")
    rspamd_url: str = Field(
        default="http://127.0.0.1:11333", description="rspamd normal worker (/checkv2)."
    )
    rspamd_controller_url: str = Field(
        default="http://127.0.0.1:11334", description="rspamd controller (/learnspam, /learnham)."
    )
    rspamd_password: str = Field(default="", description="rspamd controller password.")
    max_size: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="Bytes of a message the spam engines look at (spamd/rspamd skip larger).",
    )
    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "bayes": 1.0,
            "heuristics": 1.0,
            "dnsbl": 1.0,
            "spamassassin": 1.0,
            "rspamd": 1.0,
        },
        description="Engine weights `mxgate evaluate` combines with "
        "(tenants: policy.engine_weights).",
    )


class ScannerSettings(BaseModel):
    """The scanner group.

    The engines' settings stay here, flat and documented with the rest (one env var each,
    e.g. ``MXGATE_SCANNER__CLAMAV_SOCKET``), because the core may not import the engines. Each
    engine module reads the few it needs into its own small model
    (``scanner.engines.common.EngineSettings``), so an engine's settings are declared next to
    its code without changing what operators set.
    """

    model_config = ConfigDict(frozen=True)
    engines: tuple[str, ...] = Field(
        default=DEFAULT_ENGINES,
        description="Enabled engines, in report order. The default is the protection a gateway "
        "runs out of the box: antivirus, in-process antispam and sender authentication "
        "(clamav needs scanner.clamav_socket; `mxgate up` starts a clamd).",
    )
    engine_timeout: float = Field(default=20.0, gt=0, description="Seconds per engine per message.")
    batch_size: int = Field(default=50, ge=1, description="Messages per Kafka transaction.")
    batch_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description="Bytes of message bodies per Kafka transaction (the sizes MessageReceived "
        "carries): a batch closes before the message that would take it past this; a larger "
        "message is a batch of its own.",
    )
    decoded_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description="Bytes of decoded MIME parts and archive members held at once by the "
        "messages being scanned: the next message is parsed only while less is held (each is "
        "released with its verdict); one message may go over.",
    )
    hold_deadline: float = Field(
        default=30.0,
        gt=0,
        description="Seconds from the start of a batch by which a tenant's hold rescans must "
        "end: a rescan that could end later is not made, and on_hold_expired decides (reason "
        "av-hold-deadline). Bounds the batch's open Kafka transaction: at most 3/4 of "
        "kafka.transaction_timeout_ms.",
    )
    yara_rules: Path | None = Field(default=None, description="YARA rules dir; default: packaged.")
    auth: AuthSettings = AuthSettings()
    spam: SpamSettings = SpamSettings()
    shadow_engines: tuple[str, ...] = Field(
        default=(),
        description="Engines run in shadow mode: verdicts recorded (shadow=true) and scored, "
        "never counted in the action.",
    )
    engine_timeouts: dict[str, float] = Field(
        default_factory=dict,
        description='Per-engine timeout overrides in seconds, e.g. {"sandbox": 50}.',
    )
    isolated: tuple[str, ...] = Field(
        default=("yara", "attachments", "office", "pdf"),
        description="Engines run in worker processes, so a crash in native code costs one "
        "verdict, not the scanner; a crashed or hung worker is replaced.",
    )
    isolation_workers: int = Field(default=2, ge=1, description="Worker processes per engine.")
    isolation_queue_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a scan may wait for a free isolated-engine worker; not counted in "
        "the engine timeout. Running out is a recorded missing verdict (fail closed).",
    )
    isolation_memory_mb: int = Field(
        default=2048, ge=64, description="Address-space limit of one engine worker process."
    )
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive failures that open an engine's circuit."
    )
    breaker_cooldown: float = Field(
        default=30.0, gt=0, description="Seconds an open circuit waits before one probe scan."
    )
    cache_entries: int = Field(
        default=10_000, ge=0, description="Verdict cache size (body hash+engine+version); 0: off."
    )
    control_refresh: float = Field(
        default=10.0, gt=0, description="Seconds between engine status reports (control topic)."
    )
    clamav_socket: str = Field(
        default="", description="clamd socket: a unix socket path or tcp://HOST:PORT."
    )
    clamav_db_dir: Path | None = Field(
        default=None, description="clamd's DatabaseDirectory, to version unofficial signatures."
    )
    reputation_file: Path | None = Field(
        default=None, description="Known-bad SHA-256 list, one hash a line (reloaded on change)."
    )
    reputation_kafka: str = Field(
        default="",
        description="Kafka bootstrap servers whose compacted reputation topic the reputation "
        "engine reads at start and then follows; empty: the file only.",
    )
    reputation_topic: str = Field(
        default="mxgate.reputation.v1",
        description="Full name (with any topic prefix) of that reputation topic.",
    )
    sandbox_url: str = Field(
        default="",
        description="Sandbox service base URL (CAPE REST API v2), e.g. http://cape:8000.",
    )
    sandbox_token: str = Field(
        default="", description="Sandbox API token, sent as 'Authorization: Token ...'."
    )
    sandbox_types: tuple[str, ...] = Field(
        default=("executable", "office", "pdf", "script"),
        description="True attachment types (attachments engine categories) sent to the sandbox.",
    )
    sandbox_timeout: float = Field(
        default=45.0,
        gt=0,
        description="Seconds a message is held for the sandbox's verdict, then the tenant's "
        "on_sandbox_timeout decides. The sandbox engine's scanner timeout is raised to cover "
        "it. The batch's Kafka transaction stays open meanwhile: keep it well under "
        "kafka.transaction_timeout_ms, itself capped by the broker's transaction.max.timeout.ms.",
    )
    sandbox_poll_interval: float = Field(
        default=5.0, gt=0, description="Seconds between sandbox task status polls."
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the scanner's Prometheus /metrics (dead letters, unknown schemas, "
        "batch failures, rejected control records); 0 disables.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of the metrics port.")

    @model_validator(mode="after")
    def _sandbox_budget(self) -> ScannerSettings:
        # The runner cuts every engine off at its timeout; the sandbox engine holds a message
        # for sandbox_timeout and answers "timeout" itself, so its runner budget must be longer.
        if "sandbox" in self.engines or "sandbox" in self.shadow_engines:
            budget = self.sandbox_timeout + 5.0
            given = self.engine_timeouts.get("sandbox")
            if given is None:
                # engine_timeouts is this instance's own (validated) dict: filled in, not shared.
                self.engine_timeouts["sandbox"] = budget
            elif given < budget:
                raise ValueError(
                    f"engine_timeouts['sandbox'] ({given:g}s) must exceed sandbox_timeout "
                    f"({self.sandbox_timeout:g}s) by 5s, or the scanner cuts the wait short"
                )
        return self


class DelivererSettings(BaseModel):
    """The deliverer group."""

    model_config = ConfigDict(frozen=True)
    hostname: str = Field(
        default="mxgate.local",
        description="Name the deliverer gives in EHLO, DSNs, digests and ARC/A-R headers.",
    )
    arc_key_file: Path | None = Field(
        default=None,
        description="PEM private key to ARC-seal delivered mail with (RFC 8617); unset: no seal.",
    )
    arc_selector: str = Field(default="mxgate", description="ARC selector (DNS: SEL._domainkey).")
    arc_domain: str = Field(default="", description="ARC signing domain (d=); needed to seal.")
    retry_schedule: tuple[float, ...] = Field(
        default=(60.0, 300.0, 900.0, 3600.0),
        description="Seconds before each retry tier; the last tier repeats until expiry.",
    )
    expire_after: float = Field(
        default=5 * 86400.0, description="Seconds until a deferral expires."
    )
    connect_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to open a connection to a next hop."
    )
    command_timeout: float = Field(
        default=300.0, gt=0, description="Seconds to wait for a next hop's reply to a command."
    )
    batch_size: int = Field(default=50, ge=1, description="Work items per Kafka transaction.")
    batch_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description="Bytes of message bodies per Kafka transaction (the size the decision or "
        "work item carries; an item without one counts as receiver.max_message_size): a batch "
        "closes before the item that would take it past this; a larger one is a batch of its "
        "own. Each destination group of an item holds a few copies of its body on top.",
    )
    max_connections_per_route: int = Field(
        default=10, ge=1, description="Concurrent connections to one destination host:port."
    )
    state_path: Path = Field(default=Path("var/deliverer"), description="Local dedupe state.")
    idle_timeout: float = Field(
        default=15.0, ge=0, description="Seconds an idle connection is kept open for reuse."
    )
    batch_deadline: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a batch waits for slow attempts; later ones are recorded deferred "
        "and finish in the background, so one stalled server never holds other tenants' mail.",
    )
    outbound_route: str = Field(
        default="",
        description="host:port for mail to non-tenant domains (DSNs, digests); empty: MX lookup.",
    )
    dns_nameservers: tuple[str, ...] = Field(
        default=(), description="Resolvers for MX lookups as ip or ip:port; empty: the system's."
    )
    dsn_enabled: bool = Field(default=True, description="Send DSNs for bounces and expiries.")
    subject_tag: str = Field(
        default="", description="Prefix put on the Subject of tagged mail (e.g. '[SPAM]')."
    )
    dedupe_rebuild: bool = Field(
        default=True, description="Rebuild the dedupe record from the delivery topic at start."
    )
    mta_sts_enabled: bool = Field(
        default=True,
        description="Apply MTA-STS (RFC 8461) policies to MX routes (a route can opt out with "
        "mta_sts = false).",
    )
    mta_sts_ca_file: Path | None = Field(
        default=None,
        description="CA bundle for MTA-STS policy servers and for MX certificates under an "
        "enforced policy; empty: the system CAs.",
    )
    mta_sts_port: int = Field(
        default=443, ge=1, le=65535, description="HTTPS port of mta-sts.<domain> (tests only)."
    )
    mta_sts_timeout: float = Field(
        default=10.0, gt=0, description="Seconds for one MTA-STS policy fetch."
    )
    mta_sts_cache: bool = Field(
        default=True,
        description="Keep fetched MTA-STS policies in rocksdict under state_path (survive "
        "restarts).",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the deliverer's Prometheus /metrics (dead letters, withheld DSNs, "
        "MTA-STS findings, batch failures); 0 disables.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of the metrics port.")


class OpsSettings(BaseModel):
    """Ops and data-team tools: message index, engine scoreboard, garbage collection."""

    model_config = ConfigDict(frozen=True)
    state_path: Path = Field(
        default=Path("var/ops"),
        description="Local state of the ops tools (index and gc rocksdict, scoreboard tables).",
    )
    scoreboard_host: str = Field(default="127.0.0.1", description="Scoreboard HTTP address.")
    scoreboard_port: int = Field(
        default=6066, ge=0, le=65535, description="Scoreboard HTTP port (JSON at /stats)."
    )
    scoreboard_window: float = Field(
        default=3600.0, gt=0, description="Seconds per scoreboard time window (tumbling)."
    )
    scoreboard_url: str = Field(
        default="", description="Where `mxgate engines stats` asks; empty: host and port above."
    )
    gc_grace: float = Field(
        default=86_400.0,
        ge=0,
        description="Seconds a body must stay unreferenced (seen by two gc runs) before "
        "`mxgate gc` deletes it; covers a body stored just before its event is produced.",
    )
    operators_file: Path | None = Field(
        default=None,
        description="TOML roles table (admin, tenant-admin per tenant, read-only) the ops "
        "commands check before acting; unset: every identity acts as admin.",
    )


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
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the receiver's Prometheus /metrics (worker i: this + i); "
        "0 disables. Scanner and deliverer: scanner.metrics_port, deliverer.metrics_port.",
    )
    kafka: KafkaSettings = KafkaSettings()
    store: StoreSettings = StoreSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    scanner: ScannerSettings = ScannerSettings()
    deliverer: DelivererSettings = DelivererSettings()
    ops: OpsSettings = OpsSettings()

    @model_validator(mode="after")
    def _deadlines_fit_the_transaction(self) -> Settings:
        # A batch whose hold rescans outlast the transaction is aborted by the broker and
        # retried until it is dead-lettered: refuse the configuration instead.
        # A quarter of the transaction is left for producing the outputs and committing.
        limit = self.kafka.transaction_timeout_ms / 1000 * 0.75
        deadlines = {
            "scanner.hold_deadline": self.scanner.hold_deadline,
            "deliverer.batch_deadline": self.deliverer.batch_deadline,
        }
        over = [f"{k} ({v:g}s)" for k, v in deadlines.items() if v > limit]
        if over:
            raise ValueError(
                f"{', '.join(over)} must be at most "
                f"3/4 of kafka.transaction_timeout_ms ({limit:g}s)"
            )
        return self
