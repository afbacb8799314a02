"""The roles table: who may do what on which tenant's mail, and what is recorded as who."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxgate.errors import ConfigError
from ops.operators import Action, Identity, NotAllowed, Operators, Role, identify

TABLE = """
[operators."kafka:ops-alice"]
role = "admin"

[operators."kafka:acme-admin"]
role = "tenant-admin"
tenants = ["acme"]

[operators."unix:carol@mx1"]
role = "read-only"
"""


@pytest.fixture
def table(tmp_path: Path) -> Operators:
    f = tmp_path / "operators.toml"
    f.write_text(TABLE)
    return Operators.load(f)


ALICE = Identity("kafka:ops-alice", True)
ACME = Identity("kafka:acme-admin", True)
CAROL = Identity("unix:carol@mx1", False)


@pytest.mark.parametrize("action", list(Action))
def test_an_admin_may_do_everything_everywhere(table: Operators, action: Action) -> None:
    assert table.authorize(ALICE, action, "acme").role is Role.admin
    assert table.authorize(ALICE, action, None).role is Role.admin


@pytest.mark.parametrize(
    "action", [Action.read, Action.release, Action.delete, Action.report_spam, Action.digest]
)
def test_a_tenant_admin_acts_on_its_tenants_only(table: Operators, action: Action) -> None:
    assert table.authorize(ACME, action, "acme").tenants == {"acme"}
    with pytest.raises(NotAllowed, match=f"may not {action.value} on tenant globex"):
        table.authorize(ACME, action, "globex")
    with pytest.raises(NotAllowed):  # all tenants at once is not its own
        table.authorize(ACME, action, None)


@pytest.mark.parametrize(
    "action", [Action.engine_switch, Action.redeliver, Action.deadletter_retry]
)
def test_cluster_wide_actions_are_the_admins_alone(table: Operators, action: Action) -> None:
    for who in (ACME, CAROL):
        with pytest.raises(NotAllowed, match=f"may not {action.value}"):
            table.authorize(who, action, "acme")


def test_read_only_reads_and_nothing_else(table: Operators) -> None:
    assert table.authorize(CAROL, Action.read, "acme").role is Role.read_only
    for action in set(Action) - {Action.read}:
        with pytest.raises(NotAllowed, match=r"\(read-only\)"):
            table.authorize(CAROL, action, "acme")


def test_someone_not_in_the_table_may_do_nothing(table: Operators) -> None:
    with pytest.raises(NotAllowed, match="not in the operators table"):
        table.authorize(Identity("kafka:mallory", True), Action.read, "acme")


def test_without_a_table_everyone_is_admin() -> None:
    assert Operators.load(None).authorize(CAROL, Action.engine_switch).role is Role.admin


def test_the_identity_is_the_kafka_principal_or_the_local_account() -> None:
    assert identify("ops-alice") == Identity("kafka:ops-alice", True)
    local = identify(None)
    assert local.name.startswith("unix:") and "@" in local.name and not local.authenticated


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[operators.x]\nrole = "boss"\n', "operators.x.role", "must be one of"),
        ('[operators.x]\nrole = "tenant-admin"\n', "operators.x.tenants", "needs its tenants"),
        ('[operators.x]\nrole = "admin"\ntenants = "acme"\n', "operators.x.tenants", "a list"),
        ('[operators.x]\nrole = "admin"\nscope = 1\n', "operators.x.scope", "unknown key"),
        ("[operators]\nx = 1\n", "operators.x", "must be a table"),
        ("[people]\n", "operators", "no [operators.NAME] table"),
        ("[operators\n", "-", "not valid TOML"),
    ],
)
def test_a_bad_table_names_the_file_and_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    f = tmp_path / "operators.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        Operators.load(f)
    assert (e.value.file, e.value.key) == (str(f), key) and problem in e.value.problem


def test_a_missing_table_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        Operators.load(tmp_path / "nope.toml")
