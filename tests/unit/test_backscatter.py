"""Backscatter: BATV prvs= tags on bounces to tenant addresses."""

from __future__ import annotations

import hashlib
import hmac

from mxgate.tenants import Policy
from scanner.engines.backscatter import BackscatterEngine, batv_sign, batv_verify
from scanner.engines.common import ParsedMessage
from scanner.policy import decide

KEYS = ("secret-new", "secret-old")
NOW = 1_800_000_000.0


def test_sign_then_verify_and_what_breaks_it() -> None:
    tagged = batv_sign("alice@tenant.test", KEYS, 7, now=NOW)
    assert tagged.startswith("prvs=0") and tagged.endswith("=alice@tenant.test")
    assert batv_verify(tagged, KEYS, 7, now=NOW) == (True, "valid")
    assert batv_verify(tagged, KEYS, 7, now=NOW + 6 * 86400)[0]
    assert batv_verify(tagged, KEYS, 7, now=NOW + 9 * 86400) == (False, "expired")
    forged = tagged[:10] + ("0" if tagged[10] != "0" else "1") + tagged[11:]
    assert batv_verify(forged, KEYS, 7, now=NOW) == (False, "bad signature")
    assert batv_verify("alice@tenant.test", KEYS, 7) == (False, "no prvs tag")
    assert batv_verify(tagged, ("other",), 7, now=NOW) == (False, "bad signature")


def test_an_older_key_still_verifies() -> None:
    # The tag's first digit names the key, so mail signed before a key rotation still verifies.
    ddd = batv_sign("a@tenant.test", KEYS, 7, now=NOW)[6:9]
    mac = hmac.new(KEYS[1].encode(), f"1{ddd}a@tenant.test".encode(), hashlib.sha1)
    assert batv_verify(f"prvs=1{ddd}{mac.hexdigest()[:6]}=a@tenant.test", KEYS, 7, now=NOW)[0]


async def test_bounce_without_valid_tag_is_a_finding_policy_acts_on() -> None:
    engine = BackscatterEngine(KEYS, 7, domains=("tenant.test",))
    good = batv_sign("alice@tenant.test", KEYS, 7)
    ok = await engine.check(ParsedMessage("b1", "t", b"", (), (), mail_from="", rcpt_to=(good,)))
    assert ok.outcome == "clean" and ok.symbols == ("BATV_VALID",)
    bad = await engine.check(
        ParsedMessage("b2", "t", b"", (), (), mail_from="<>", rcpt_to=("alice@tenant.test",))
    )
    assert bad.outcome == "match" and bad.symbols == ("BACKSCATTER",)
    assert decide([bad], Policy(on_content_match="quarantine")).action == "quarantine"
    normal = await engine.check(
        ParsedMessage("b3", "t", b"", (), (), mail_from="x@y.test", rcpt_to=("a@tenant.test",))
    )
    other = await engine.check(
        ParsedMessage("b4", "t", b"", (), (), mail_from="", rcpt_to=("a@elsewhere.test",))
    )
    assert normal.outcome == other.outcome == "skipped"
    off = await BackscatterEngine(()).check(
        ParsedMessage("b5", "t", b"", (), (), mail_from="", rcpt_to=("a@tenant.test",))
    )
    assert off.outcome == "skipped"
