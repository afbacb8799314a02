"""`mxgate up`'s secured broker, without starting it: the CA and broker certificate made once,
the passwords file private and stable, each role's own user, and a second shell handed the ops
password from that file (never from var/runtime.json) only for `up`'s own broker."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest
from cryptography import x509

from cli.common import load_settings
from devstack import passwords, runtime
from devstack.localbus import ADMIN, LocalBus, ensure_broker_tls
from mxgate import catalog
from mxgate.settings import KafkaSettings


def test_passwords_are_private_stable_and_completed(tmp_path: Path) -> None:
    f = tmp_path / "secrets" / "users.json"
    first = passwords.ensure(f, ["a", "b"])
    assert f.stat().st_mode & 0o777 == 0o600
    assert f.parent.stat().st_mode & 0o777 == 0o700
    assert len(set(first.values())) == 2 and all(len(p) >= 32 for p in first.values())
    again = passwords.ensure(f, ["b", "a", "c"])
    assert again["a"] == first["a"] and again["b"] == first["b"] and again["c"] not in first
    assert passwords.read(f) == again
    f.chmod(0o644)  # readable by others: no secret any more
    assert passwords.read(f) == {}
    with pytest.raises(PermissionError, match="0600"):
        passwords.ensure(f, ["a"])


def test_the_broker_certificate_is_signed_by_the_ca_for_the_host_and_kept(tmp_path: Path) -> None:
    ca_file, cert_file, key_file = ensure_broker_tls(tmp_path / "tls", "127.0.0.1")
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert key_file.stat().st_mode & 0o077 == 0
    assert (tmp_path / "tls" / "ca.key").stat().st_mode & 0o077 == 0
    before = [p.read_bytes() for p in (ca_file, cert_file, key_file)]
    assert ensure_broker_tls(tmp_path / "tls", "127.0.0.1") == (ca_file, cert_file, key_file)
    assert [p.read_bytes() for p in (ca_file, cert_file, key_file)] == before
    # A lost broker certificate is issued again by the same CA.
    cert_file.unlink()
    ensure_broker_tls(tmp_path / "tls", "127.0.0.1")
    assert ca_file.read_bytes() == before[0]
    x509.load_pem_x509_certificate(cert_file.read_bytes()).verify_directly_issued_by(ca)


def test_every_role_has_its_own_user_and_password(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    envs = {r: bus.role_env(r) for r in catalog.ROLES}
    assert {e["MXGATE_KAFKA__SASL_USERNAME"] for e in envs.values()} == {
        catalog.principal(r).removeprefix("User:") for r in catalog.ROLES
    }
    assert len({e["MXGATE_KAFKA__SASL_PASSWORD"] for e in envs.values()}) == len(catalog.ROLES)
    for e in envs.values():
        assert e["MXGATE_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
        assert Path(e["MXGATE_KAFKA__SSL_CA_LOCATION"]).is_file()
    stored = passwords.read(bus.secrets_file)
    assert set(stored) == {ADMIN, *(e["MXGATE_KAFKA__SASL_USERNAME"] for e in envs.values())}
    # A later `up` on the same workdir gives the same credentials (the broker kept them).
    assert LocalBus(tmp_path).role_env("receiver") == envs["receiver"]


def test_a_broker_formatted_for_other_users_is_moved_aside(tmp_path: Path) -> None:
    # What a PLAINTEXT `up` of an older mxgate left: formatted storage, no SCRAM users.
    meta = tmp_path / "kafka" / "broker-0" / "data" / "meta.properties"
    meta.parent.mkdir(parents=True)
    meta.write_text("cluster.id=x\n")
    bus = LocalBus(tmp_path)
    assert bus._retire_foreign_storage() is not None
    assert not (tmp_path / "kafka").exists()
    assert list(tmp_path.glob("kafka.retired-*/broker-0/data/meta.properties"))


def _lent_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]) -> str:
    """The SASL password a clean shell in ``tmp_path`` ends up with, `up` being this process."""
    bus = LocalBus(tmp_path / "var")
    env = {"MXGATE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"} | bus.role_env("ops")
    runtime.write(tmp_path / "var" / "runtime.json", env, bus.secrets_file)
    text = (tmp_path / "var" / "runtime.json").read_text()
    assert not any(pw in text for pw in passwords.read(bus.secrets_file).values())
    assert json.loads(text)["secrets"] == str(bus.secrets_file)
    for key in [k for k in os.environ if k.startswith("MXGATE_")] + list(env):
        monkeypatch.delenv(key, raising=False)  # undone after the test, also for what is lent
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return load_settings().kafka.sasl_password.get_secret_value()


def test_a_clean_second_shell_acts_as_ops_with_the_password_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lent = _lent_settings(tmp_path, monkeypatch, {})
    assert (
        lent
        and lent == passwords.read(tmp_path / "var" / "secrets" / "kafka-users.json")["mxgate-ops"]
    )
    assert os.environ["MXGATE_KAFKA__SASL_USERNAME"] == "mxgate-ops"


def test_a_shell_naming_another_user_gets_that_user_s_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_team = {"MXGATE_KAFKA__SASL_USERNAME": "mxgate-data-reader"}
    lent = _lent_settings(tmp_path, monkeypatch, data_team)
    users = passwords.read(tmp_path / "var" / "secrets" / "kafka-users.json")
    assert lent == users["mxgate-data-reader"]


def test_a_shell_pointed_at_another_cluster_is_never_lent_a_local_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = {"MXGATE_KAFKA__BOOTSTRAP_SERVERS": "kafka.example.net:9093"}
    assert _lent_settings(tmp_path, monkeypatch, other) == ""
    # Nor the rest of `up`'s broker settings: that cluster's security is the shell's own.
    assert "MXGATE_KAFKA__SASL_USERNAME" not in os.environ
    assert "MXGATE_KAFKA__SECURITY_PROTOCOL" not in os.environ


def test_up_leaves_a_configured_cluster_s_security_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MXGATE_KAFKA__BOOTSTRAP_SERVERS set, `up` makes no CA, users or ACLs and passes the
    operator's settings on untouched (stopped where it would create the topics)."""
    from cli import stack

    env = {k: v for k, v in os.environ.items() if not k.startswith("MXGATE_")}
    env |= {"MXGATE_KAFKA__BOOTSTRAP_SERVERS": "kafka.example.net:9093",
            "MXGATE_SCANNER__ENGINES": '["content"]'}  # fmt: skip
    monkeypatch.setattr(os, "environ", env)  # `up` fills the environment of its process
    monkeypatch.setattr(stack.signal, "signal", lambda *_a: None)  # nor pytest's handlers
    monkeypatch.chdir(tmp_path)
    seen: list[object] = []

    class Stop(Exception):
        pass

    def create_topics(settings: object, _topics: object) -> None:
        seen.append(settings)
        runtime_text = (tmp_path / "var" / "runtime.json").read_text()
        seen.append(json.loads(runtime_text))
        raise Stop

    monkeypatch.setattr("mxgate.kafka.create_topics", create_topics)
    with pytest.raises(Stop):
        stack.up(workdir=Path("var"), capture_port=2526)
    kafka, record = seen
    assert isinstance(kafka, KafkaSettings)
    assert kafka == load_settings().kafka  # exactly the operator's settings
    assert kafka.security_protocol == "PLAINTEXT" and not kafka.sasl_username
    assert isinstance(record, dict) and "secrets" not in record
    assert not any(k.startswith("MXGATE_KAFKA__S") for k in record["env"])
    assert not (tmp_path / "var" / "secrets").exists()
    assert not (tmp_path / "var" / "kafka-tls").exists()
    assert not (tmp_path / "var" / "kafka").exists()
