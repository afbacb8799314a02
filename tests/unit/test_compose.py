"""infra/docker-compose.yml stays consistent with the catalog, the settings and the tests.

No Docker engine runs here, so the file is validated by reading it: every mxgate service's
environment must load as Settings, point at services that exist, and use production topic
names; the tenants it mounts must route to the compose sink.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli.stack import Role
from mxgate.settings import Settings
from mxgate.tenants import Tenants

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "infra" / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def mxgate_services(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == "mxgate:local"}


def settings_for(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for k in list(__import__("os").environ):
        if k.startswith("MXGATE_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    return Settings()


def test_topology(compose: dict) -> None:
    services = compose["services"]
    mx = mxgate_services(compose)
    roles = [s["command"][1] for s in mx.values() if s["command"][0] == "run"]
    assert {"kafka", "s3"} <= set(services)
    assert roles.count("scanner") == 2
    assert {"receiver", "deliverer", "capture"} <= set(roles)
    assert all(r in Role.__members__ for r in roles)
    assert mx["topics"]["command"] == ["topics", "create"]
    # Nothing relies on broker auto-creation: topics exist before any role starts.
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for name, svc in mx.items():
        if svc["command"][0] == "run" and svc["command"][1] != "capture":
            cond = svc["depends_on"]["topics"]["condition"]
            assert cond == "service_completed_successfully", name


def test_every_role_env_loads_and_points_at_real_services(
    compose: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    listeners = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    s3_env = services["s3"]["environment"]
    for name, svc in mxgate_services(compose).items():
        s = settings_for(svc["environment"], monkeypatch)
        host, port = s.kafka.bootstrap_servers.split(":")
        assert f"PLAINTEXT://{host}:{port}" in listeners, name
        assert host in services
        assert s.kafka.topic_prefix == "", "compose runs on the catalog's production names"
        assert s.store.backend == "s3"
        assert s.store.s3_endpoint == s3_env["S3PROXY_ENDPOINT"].replace("0.0.0.0", "s3")
        assert s.store.s3_access_key_id == s3_env["S3PROXY_IDENTITY"]
        assert s.store.s3_secret_access_key == s3_env["S3PROXY_CREDENTIAL"]
        if svc["command"][-1] not in ("receiver", "scanner", "deliverer"):
            continue
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes", [])}
        tenants_src = mounts[str(s.tenants_file)]
        assert (COMPOSE.parent / tenants_src).exists(), tenants_src


def test_tenants_route_to_the_compose_sink(compose: dict) -> None:
    sink = compose["services"]["sink"]
    port = int(sink["command"][sink["command"].index("--port") + 1])
    tenants = Tenants.load(COMPOSE.parent / "docker" / "tenants.toml")
    for t in tenants:
        assert t.route.host == "sink" and t.route.port == port


def test_test_fixtures_match_compose_ports(compose: dict) -> None:
    import conftest

    s3 = compose["services"]["s3"]
    assert f"127.0.0.1:{conftest.COMPOSE_S3_PORT}:{conftest.COMPOSE_S3_PORT}" in s3["ports"]
    assert s3["environment"]["S3PROXY_IDENTITY"] == conftest.COMPOSE_S3_ACCESS_KEY
    assert s3["environment"]["S3PROXY_CREDENTIAL"] == conftest.COMPOSE_S3_SECRET_KEY
    kafka = compose["services"]["kafka"]
    port = conftest.COMPOSE_KAFKA_PORT
    assert f"127.0.0.1:{port}:{port}" in kafka["ports"]
    assert f"HOST://127.0.0.1:{port}" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert conftest.COMPOSE_KAFKA_SERVICE == "kafka" and conftest.COMPOSE_S3_SERVICE == "s3"
