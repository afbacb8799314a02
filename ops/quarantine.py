"""The quarantine index and the digest mail, folded from the quarantine topic.

``MessageQuarantined`` opens an entry; ``QuarantineReleased`` / ``QuarantineDeleted`` close it.
`mxgate quarantine` (cli.quarantine) lists, shows, releases and deletes through this index.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import schemas
from mxgate import catalog
from mxgate.kafka import read_events
from mxgate.settings import Settings


@dataclass
class Entry:
    """One message in the quarantine index."""

    message_id: str
    tenant: str
    quarantined_at: dt.datetime
    action: str
    reasons: list[str]
    mail_from: str
    rcpt_to: list[str]
    object_key: str
    size: int
    state: str = "held"  # held | released | deleted
    history: list[dict[str, Any]] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["quarantined_at"] = self.quarantined_at.isoformat()
        return d


def read_topic(settings: Settings, topic: str) -> Iterator[schemas.Event]:
    """Every committed event of one topic, from the beginning to the end at call time."""
    return read_events(settings, topics=[topic])


def fold(events: Iterable[schemas.Event]) -> dict[str, Entry]:
    """The quarantine index from the quarantine topic's events."""
    index: dict[str, Entry] = {}
    for r in events:
        if isinstance(r, schemas.MessageQuarantined):
            index[r.message_id] = Entry(
                r.message_id, r.tenant, r.quarantined_at, r.action, list(r.reasons),
                r.mail_from, list(r.rcpt_to), r.object_key, r.size,
            )  # fmt: skip
        elif isinstance(r, schemas.QuarantineReleased) and (e := index.get(r.message_id)):
            e.state = "released"
            e.history.append({"event": "released", "at": r.released_at.isoformat(),
                              "by": r.released_by, "reason": r.reason,
                              "rcpt_to": list(r.rcpt_to)})  # fmt: skip
        elif isinstance(r, schemas.QuarantineDeleted) and (e := index.get(r.message_id)):
            e.state = "deleted"
            e.history.append({"event": "deleted", "at": r.deleted_at.isoformat(),
                              "by": r.deleted_by, "reason": r.reason})  # fmt: skip
    return index


def parse_when(value: str, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 time (UTC when naive) or an age like ``90m``, ``6h``, ``2d``."""
    m = re.fullmatch(r"(\d+)([smhd])", value.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now - dt.timedelta(seconds=int(m.group(1)) * unit)
    t = dt.datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def matches(
    e: Entry,
    *,
    tenant: str | None,
    sender: str | None = None,
    recipient: str | None = None,
    reason: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    state: str = "held",
) -> bool:
    """Whether ``e`` passes the list filters (substring matches, case-insensitive)."""
    if (tenant is not None and e.tenant != tenant) or (state != "all" and e.state != state):
        return False
    if sender and sender.lower() not in e.mail_from.lower():
        return False
    if recipient and not any(recipient.lower() in r.lower() for r in e.rcpt_to):
        return False
    if reason and not any(reason.lower() in r.lower() for r in e.reasons):
        return False
    if since and e.quarantined_at < since:
        return False
    return not (until and e.quarantined_at > until)


def index(settings: Settings) -> dict[str, Entry]:
    return fold(read_topic(settings, catalog.name(catalog.QUARANTINE, settings.kafka.topic_prefix)))


def group_for_digest(entries: list[Entry]) -> dict[str, list[Entry]]:
    """Held (not discarded) messages per recipient, oldest first."""
    out: dict[str, list[Entry]] = {}
    for e in sorted(entries, key=lambda e: e.quarantined_at):
        if e.state != "held" or e.action != "quarantine":
            continue
        for r in e.rcpt_to:
            out.setdefault(r.lower(), []).append(e)
    return out


def build_digest(
    *, hostname: str, tenant: str, recipient: str, entries: list[Entry], now: dt.datetime
) -> bytes:
    """The digest mail for one recipient: what was held for them, and how to get it released.

    Built with the stdlib ``email`` package; sent from the null sender (Auto-Submitted), so a
    failure to deliver it never bounces anywhere.
    """
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import format_datetime, make_msgid

    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Quarantine <postmaster@{hostname}>"
    msg["To"] = recipient
    msg["Subject"] = f"Quarantine digest: {len(entries)} message(s) held for you"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid("digest", domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"
    lines = [
        f"These messages to {recipient} were held in quarantine by the mail gateway",
        "and have not been delivered:",
        "",
    ]
    for e in entries:
        lines.append(
            f"  {e.quarantined_at:%Y-%m-%d %H:%M} UTC  from <{e.mail_from}>  "
            f"({', '.join(e.reasons) or 'policy'})  id {e.message_id}"
        )
    lines += [
        "",
        "If one of them is a message you expected, ask your mail administrator to release",
        "it, giving its id. The administrator runs:",
        "",
        f"  mxgate quarantine release <id> --tenant {tenant} --reason '<why>'",
        "",
        "Held messages stay until an administrator releases or deletes them.",
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg.as_bytes()
