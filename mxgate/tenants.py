"""Tenants: the domains mxgate accepts mail for, where it goes, and the policy that decides.

Tenants live in one TOML file (``MXGATE_TENANTS_FILE``)::

    [tenants.example]
    domains = ["example.test"]
    route = { host = "127.0.0.1", port = 2526 }

    [tenants.example.policy]
    version = "2026-11-28.1"
    on_virus = "quarantine"
    spam_target_fpr = 0.001         # with a trained spam model: tag at this ham FP rate
    spam_tag = 5.0                  # without one: tag at this summed score
    spam_quarantine = 10.0
    spam_discard = inf              # TOML's infinity: never discard (the default)
    on_engine_error = "quarantine"  # no antivirus verdict: deliver | tag | hold | quarantine

A bad file raises :class:`mxgate.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)

from mxgate.errors import ConfigError

Action = Literal["deliver", "tag", "quarantine", "discard"]


class Hop(BaseModel):
    """One static next hop; lower ``priority`` is tried first, equal priorities share load."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    priority: int = Field(default=10, ge=0)


class Route(BaseModel):
    """Where a tenant's mail goes: the customer's own SMTP servers.

    Exactly one of: ``host`` (+ ``port``), a list of ``hops`` with priorities (failover in
    priority order), or ``mx`` (a domain whose MX records are looked up at delivery time;
    ``port`` applies to every MX host). ``tls`` is the STARTTLS policy: ``opportunistic``
    (use it when offered, any certificate), ``required`` (no delivery in clear, any
    certificate), ``verified`` (certificate must chain to ``tls_ca_file`` or the system CAs
    and match the host name). An ``mx`` route also follows the MTA-STS policy (RFC 8461)
    that the ``mx`` domain publishes, unless ``mta_sts = false``: ``enforce`` narrows the MX
    hosts to the policy's and requires verified TLS to them; static hops never use it::

        route = { hops = [{ host = "mx1.corp", priority = 10 }, { host = "mx2.corp", priority = 20 }], tls = "required" }
    """  # noqa: E501

    model_config = ConfigDict(frozen=True, extra="forbid")
    host: str = ""
    port: int = Field(default=25, ge=1, le=65535)
    hops: tuple[Hop, ...] = ()
    mx: str = ""
    tls: Literal["opportunistic", "required", "verified"] = "opportunistic"
    tls_ca_file: Path | None = None
    max_connections: int | None = Field(
        default=None, ge=1, description="Concurrent connections to each hop; default: settings."
    )
    mta_sts: bool = Field(
        default=True, description="Follow the mx domain's MTA-STS policy (MX routes only)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Route:
        kinds = [k for k, v in (("host", self.host), ("hops", self.hops), ("mx", self.mx)) if v]
        if len(kinds) != 1:
            raise ValueError("a route needs exactly one of host, hops or mx")
        return self

    def static_hops(self) -> tuple[Hop, ...]:
        """The configured hops in failover order (empty for an MX route)."""
        if self.host:
            return (Hop(host=self.host, port=self.port, priority=0),)
        return tuple(sorted(self.hops, key=lambda h: h.priority))


class Policy(BaseModel):
    """A tenant's decision policy: data, not code. ``version`` is recorded in every decision."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: str = "1"
    on_virus: Action = "quarantine"
    on_content_match: Action = "quarantine"
    # Spam with a trained combiner (scanner/combiner.py): tag at the model's probability
    # threshold for this false-positive rate, quarantine at the one for spam_quarantine_fpr.
    # Rates are of ham weighted as in training (a hard ham counts as several easy ones) and
    # measured by cross-validation; the model's nearest stored target not above is used.
    spam_target_fpr: float = Field(default=0.001, gt=0, lt=1)
    spam_quarantine_fpr: float = Field(default=0.0002, gt=0, lt=1)
    # Without a model (never trained), the weighted sum of the antispam scores is judged
    # against these; with one, only engines the model does not know are summed this way.
    spam_tag: float = 5.0
    spam_quarantine: float = 10.0
    # Discarding loses mail for good, so it is off (infinite) unless a tenant sets a threshold.
    spam_discard: float = float("inf")
    # What a missing antivirus verdict means (the engine errored, timed out, was disabled by
    # ops, had its circuit open or found no free worker). on_engine_error: no antivirus engine
    # answered; on_av_partial_failure: some failed while another answered clean. "tag" delivers
    # with a warning header; "hold" rescans the failed engines (hold_rescans times,
    # hold_rescan_delay apart) and applies on_hold_expired if they still fail. Fail closed by
    # default; a delivered message names the rule that let it through ("allowed:...").
    on_engine_error: Literal["deliver", "tag", "hold", "quarantine"] = "quarantine"
    on_av_partial_failure: Literal["deliver", "tag", "hold", "quarantine"] = "quarantine"
    # A message that could not be parsed or unpacked completely (parse error, MIME or archive
    # limit, parse budget): some of its content was never scanned as decoded.
    on_unscannable: Action = "quarantine"
    on_hold_expired: Action = "quarantine"
    hold_rescans: int = Field(default=2, ge=0, le=10)
    hold_rescan_delay: float = Field(default=5.0, ge=0, le=60)
    engine_weights: dict[str, float] = Field(default_factory=dict)
    # Attachment findings (symbols "attachment:<what>") act only when <what> or a prefix of it
    # up to a ':' is listed here, e.g. "type:executable", "archive-limit" (any archive limit).
    # An archive the unpacker could not open (encrypted, damaged, or a compression method it
    # lacks) was not scanned inside, while the recipient's tools may open it: it is held too
    # (a tenant that takes password-protected zips removes "archive-encrypted"). An archive
    # opened with a password found in the message was scanned inside and is not held for
    # having been encrypted; "archive-password-in-body" (that phishing sign) can be listed to
    # hold it anyway. OneNote sections and HTML that builds a file in the browser (smuggling)
    # are how payloads got past gateways once macros were blocked: held too, and so is a
    # program, script, HTA or shortcut embedded in a OneNote section ("onenote-embedded").
    blocked_attachments: tuple[str, ...] = (
        "type:executable",
        "type:script",
        "type:disk-image",
        "type:onenote",
        "onenote-embedded",
        "html-smuggling",
        "double-extension",
        "rlo-filename",
        "archive-limit",
        "archive-encrypted",
        "archive-corrupt",
        "archive-unsupported",
    )
    on_blocked_attachment: Action = "quarantine"
    # Office findings: "office:<what>" symbols, same prefix rule, e.g. "vba-autoexec".
    # Macros that call out (Shell, CreateObject, downloads) are held even without an auto-exec
    # entry point (one click runs them), and an encrypted document was never looked into.
    # A tenant that takes such documents removes "vba-suspicious" / "encrypted".
    # Documents that fetch or carry code without macros are held too: a remote template or
    # other external relationship loaded on open, an OLE object in RTF (Equation Editor
    # exploits ride on these), an embedded package that is a program or script.
    # Excel 4.0 macros (a macro sheet, an Auto_Open name) and CSV/SYLK cells that run a command
    # through DDE or EXEC are held: no legitimate spreadsheet mail needs them.
    blocked_office: tuple[str, ...] = (
        "vba-autoexec",
        "vba-suspicious",
        "xlm-macro",
        "xlm-auto-open",
        "dde",
        "dde-csv",
        "sylk",
        "encrypted",
        "external-template",
        "external-relationship",
        "rtf-object",
        "rtf-equation",
        "equation-object",
        "embedded-executable",
    )
    on_blocked_office: Action = "quarantine"
    # PDF findings: "pdf:<what>" symbols (the pdf engine), same prefix rule. A PDF that runs
    # JavaScript, launches a program or carries a file is held; an open action alone (a zoom
    # level, a first page) is common in harmless PDFs and is not. "limit": the engine's inflate
    # budget ran out, so part of the file was not looked into (fail closed). A tenant that
    # takes PDF invoices with attached XML (ZUGFeRD / Factur-X) removes "embedded-file".
    blocked_pdf: tuple[str, ...] = ("javascript", "launch", "embedded-file", "limit")
    on_blocked_pdf: Action = "quarantine"
    # Sandbox: a malscore at or above this is treated as a confident detection (on_virus).
    sandbox_malicious: float = Field(default=7.0, ge=0)
    # What a sandbox that did not answer in time means.
    on_sandbox_timeout: Action = "deliver"
    # Sender authentication: the sending domain's enforced DMARC policy (p/sp, after pct) and
    # bounces that answer no mail we sent. These are findings; the tenant chooses the action.
    on_dmarc_reject: Action = "quarantine"
    on_dmarc_quarantine: Action = "quarantine"
    on_backscatter: Action = "quarantine"
    # Put in front of the Subject of tagged mail, e.g. "[SPAM]"; empty: the deliverer's
    # MXGATE_DELIVERER__SUBJECT_TAG (itself empty by default: headers only).
    subject_tag: str = Field(default="", max_length=64)


def address_list(addresses: tuple[str, ...]) -> tuple[str, ...]:
    """``user@domain`` / ``@domain`` entries in lower case; a ValueError names one without @."""
    out = tuple(a.strip().lower() for a in addresses)
    bad = [a for a in out if "@" not in a]
    if bad:
        raise ValueError(f"not user@domain or @domain: {bad[0]!r}")
    return out


class RecipientCheck(BaseModel):
    """How the receiver verifies a tenant's recipients at RCPT time (so no backscatter).

    ``callout`` (the default, also for a tenant without a ``recipients`` table): ask the
    tenant's route (MAIL FROM:<> / RCPT TO) and cache the answer in rocksdict, positives for
    ``positive_ttl`` seconds and negatives for ``negative_ttl``.
    ``static``: only ``addresses`` exist (``user@domain``, or ``@domain`` for a whole domain).
    ``none``: every address at the tenant's domains is accepted (an explicit opt-out: unknown
    users are accepted and later bounce, and the DSN rule then withholds the bounce unless the
    sender authenticated).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    mode: Literal["callout", "static", "none"] = "callout"
    addresses: tuple[str, ...] = ()
    positive_ttl: float = Field(default=7 * 86400.0, gt=0)
    negative_ttl: float = Field(default=3600.0, gt=0)
    timeout: float = Field(default=10.0, gt=0, description="Seconds for one callout.")
    # What a callout that cannot get an answer means: tell the sender to retry (451), or accept.
    on_error: Literal["tempfail", "accept"] = "tempfail"

    @field_validator("addresses")
    @classmethod
    def _lower_addresses(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return address_list(v)


class SessionReject(BaseModel):
    """Refuse malware and clear spam during the SMTP session instead of bouncing it later.

    After the body is durable and its event acknowledged, the receiver waits up to ``wait``
    seconds for the scanner's decision; an action listed in ``actions`` is answered 550 5.7.1
    with the reasons. When the wait runs out the answer is 250 and the pipeline carries on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    wait: float = Field(default=10.0, gt=0, le=120)
    actions: tuple[Action, ...] = ("quarantine", "discard")


class Greylisting(BaseModel):
    """Greylisting (RFC 6647) of a tenant's inbound mail, off unless ``enabled``.

    A (client network, sender, recipient) triplet seen for the first time is answered
    ``451 4.7.1`` at RCPT; a retry of it after ``delay`` seconds and within ``retry_window``
    passes, and the passed triplet is then accepted at once for ``pass_lifetime`` seconds
    (renewed by use). A pass also allows the client's whole network for
    ``network_lifetime`` seconds (0: never): a real MTA that retried once is not delayed again
    for its other senders and recipients. The network is the client's ``/ipv4_prefix`` or
    ``/ipv6_prefix``, as big senders retry from another host of the same farm.

    Never greylisted: clients in ``allow_networks``, and recipients in ``allow_recipients``
    (``user@domain`` or ``@domain``, e.g. ``postmaster@``, abuse desks, or domains that must not
    wait). Every receiver shares the state through the compacted topic
    ``mxgate.greylist.v1``, so a retry that lands on another receiver, or on one restarted in
    between, is recognised.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = False
    delay: float = Field(default=300.0, ge=0, le=86400)
    retry_window: float = Field(default=4 * 3600.0, gt=0, le=7 * 86400)
    pass_lifetime: float = Field(default=36 * 86400.0, gt=0, le=365 * 86400)
    network_lifetime: float = Field(default=7 * 86400.0, ge=0, le=365 * 86400)
    ipv4_prefix: int = Field(default=24, ge=8, le=32)
    ipv6_prefix: int = Field(default=64, ge=16, le=128)
    allow_networks: tuple[IPvAnyNetwork, ...] = ()
    allow_recipients: tuple[str, ...] = ()

    @field_validator("allow_recipients")
    @classmethod
    def _lower_recipients(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return address_list(v)

    @model_validator(mode="after")
    def _window_after_delay(self) -> Greylisting:
        if self.retry_window <= self.delay:
            raise ValueError("retry_window must be longer than delay")
        return self


class Tenant(BaseModel):
    """One customer: its domains, its route and its policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    domains: tuple[str, ...]
    route: Route
    policy: Policy = Policy()
    # No table: verified by callout to the tenant's route; ``mode = "none"`` opts out.
    recipients: RecipientCheck = RecipientCheck()
    # None: always answer 250 once the message is durable; decisions come later.
    session_reject: SessionReject | None = None
    greylisting: Greylisting = Greylisting()

    @field_validator("domains")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("a tenant needs at least one domain")
        return tuple(d.strip().lower().rstrip(".") for d in v)


class Tenants:
    """The tenant directory: looks tenants up by name and by recipient domain."""

    def __init__(self, tenants: list[Tenant]) -> None:
        self._by_name = {t.name: t for t in tenants}
        self._by_domain: dict[str, Tenant] = {}
        for t in tenants:
            for d in t.domains:
                self._by_domain[d] = t

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())

    def by_name(self, name: str) -> Tenant | None:
        """The tenant called ``name``, or None."""
        return self._by_name.get(name)

    def for_address(self, address: str) -> Tenant | None:
        """The tenant that owns the domain of ``address`` (case-insensitive), or None."""
        _, at, domain = address.rpartition("@")
        if not at:
            return None
        return self._by_domain.get(domain.lower().rstrip("."))

    @classmethod
    def load(cls, path: str | Path) -> Tenants:
        """Read and validate a tenants TOML file."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(p), "-", "file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(str(p), "-", f"not valid TOML: {e}") from None
        return cls.from_mapping(data, source=str(p))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "<tenants>") -> Tenants:
        """Validate an already-parsed mapping (the TOML document)."""
        raw = data.get("tenants")
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(source, "tenants", "no [tenants.NAME] table")
        out: list[Tenant] = []
        seen: dict[str, str] = {}
        for name, body in raw.items():
            if not isinstance(body, dict):
                raise ConfigError(source, f"tenants.{name}", "must be a table")
            try:
                t = Tenant(name=name, **body)
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in err["loc"])
                raise ConfigError(source, f"tenants.{name}.{loc}", err["msg"]) from None
            for d in t.domains:
                if d in seen:
                    raise ConfigError(
                        source, f"tenants.{name}.domains", f"{d} already belongs to {seen[d]}"
                    )
                seen[d] = name
            out.append(t)
        return cls(out)
