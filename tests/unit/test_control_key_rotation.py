"""Control-key rotation: switches carry the id of the key that signed them; verifiers accept
the current key and the listed previous ones, and nothing else."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr, ValidationError

import schemas
from mxgate.enginecontrol import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    ControlView,
    Headers,
    accepted_keys,
    sign,
    signed_headers,
)
from mxgate.settings import KafkaSettings
from mxgate.timeutil import utcnow

KEY = b"engine/clamav"


def _switch(engine: str = "clamav", reason: str = "r") -> bytes:
    return schemas.encode_event(
        schemas.EngineControlled(
            engine=engine, enabled=False, reason=reason, actor="a", at=utcnow()
        )
    )


def _rejected(why: str) -> float:
    return REGISTRY.get_sample_value("mxgate_control_rejected_total", {"why": why}) or 0.0


def _verifier(previous: dict[str, str]) -> ControlView:
    """A scanner's view after rotating to key "k2" (id "2026-12")."""
    return ControlView.from_settings(
        KafkaSettings(
            control_key=SecretStr("k2"),
            control_key_id="2026-12",
            control_keys_previous={kid: SecretStr(k) for kid, k in previous.items()},
        )
    )


def _signed_by_old_key(value: bytes) -> Headers:
    """What `mxgate engines disable` wrote before the rotation: key "k1", id "2026-11"."""
    return signed_headers("k1", "2026-11", KEY, value)


def test_a_switch_signed_with_a_previous_key_counts_while_that_key_is_listed() -> None:
    value = _switch()
    listed = _verifier({"2026-11": "k1"})
    listed.apply(value, KEY, _signed_by_old_key(value))
    assert listed.disabled_reason("clamav") == "r" and listed.rejected == 0

    before = _rejected("unknown_key")
    removed = _verifier({})
    removed.apply(value, KEY, _signed_by_old_key(value))
    assert removed.disabled_reason("clamav") is None and removed.rejected == 1
    assert _rejected("unknown_key") == before + 1


def test_the_current_key_signs_with_its_id_and_verifies() -> None:
    value = _switch()
    headers = signed_headers("k2", "2026-12", KEY, value)
    assert dict(headers)[KEY_ID_HEADER] == b"2026-12"
    view = _verifier({"2026-11": "k1"})
    view.apply(value, KEY, headers)
    assert view.disabled_reason("clamav") == "r" and view.rejected == 0


def test_an_unknown_key_id_is_rejected_and_counted() -> None:
    value = _switch()
    view = _verifier({"2026-11": "k1"})
    before = _rejected("unknown_key")
    # Signed with a key the verifier has never been given, under an id it does not know.
    view.apply(value, KEY, signed_headers("stolen", "9999", KEY, value))
    assert view.disabled_reason("clamav") is None
    assert view.rejected == 1 and _rejected("unknown_key") == before + 1


def test_a_key_id_cannot_be_swapped_or_stripped() -> None:
    value = _switch()
    view = _verifier({"2026-11": "k1"})
    before = _rejected("bad_signature")
    mac = sign("k1", KEY, value, "2026-11")
    # The old key's MAC relabelled as the current key's, and with its id header removed.
    view.apply(value, KEY, [(SIGNATURE_HEADER, mac.encode()), (KEY_ID_HEADER, b"2026-12")])
    view.apply(value, KEY, [(SIGNATURE_HEADER, mac.encode())])
    # The right id, the wrong key.
    view.apply(value, KEY, signed_headers("k3", "2026-11", KEY, value))
    assert view.disabled_reason("clamav") is None
    assert view.rejected == 3 and _rejected("bad_signature") == before + 3


def test_a_switch_signed_before_key_ids_checks_against_every_accepted_key() -> None:
    value = _switch()
    legacy = [(SIGNATURE_HEADER, sign("k1", KEY, value).encode())]  # no id header
    listed = _verifier({"2026-11": "k1"})
    listed.apply(value, KEY, legacy)
    assert listed.disabled_reason("clamav") == "r"
    removed = _verifier({})
    removed.apply(value, KEY, legacy)
    assert removed.disabled_reason("clamav") is None and removed.rejected == 1


def test_keys_are_never_shown_and_bad_rotation_settings_are_refused() -> None:
    s = KafkaSettings(
        control_key=SecretStr("current-secret"),
        control_keys_previous={"old": SecretStr("previous-secret")},
    )
    for shown in (repr(s), str(s), s.model_dump_json()):
        assert "current-secret" not in shown and "previous-secret" not in shown
    assert accepted_keys(s) == {"1": "current-secret", "old": "previous-secret"}
    assert accepted_keys(KafkaSettings()) == {}
    with pytest.raises(ValidationError, match="control_key_id's own id"):
        KafkaSettings(control_key=SecretStr("a"), control_keys_previous={"1": SecretStr("b")})
    with pytest.raises(ValidationError, match="needs control_key"):
        KafkaSettings(control_keys_previous={"old": SecretStr("b")})
    with pytest.raises(ValidationError, match="bad key id"):
        KafkaSettings(control_key=SecretStr("a"), control_keys_previous={"a\x00b": SecretStr("b")})
    with pytest.raises(ValidationError, match="is empty"):
        KafkaSettings(control_key=SecretStr("a"), control_keys_previous={"old": SecretStr("")})
    with pytest.raises(ValidationError):
        KafkaSettings(control_key=SecretStr("a"), control_key_id="has space")
