"""Shared fixtures: real Kafka and a real S3-compatible server for the integration tests.

Services come from one of two places:

* ``native`` (default on this machine): Kafka broker jars and S3Proxy run as local Java
  processes on 127.0.0.1 (``devstack.kafka``, ``devstack/s3server.py``). The session's
  broker is secured as production's is (``devstack.localbus``: SASL_SSL, SCRAM-SHA-512, a
  generated CA, ACLs enforced), and every role a test starts connects as its own principal
  with the catalog's least-privilege ACLs on that test's topics (``support.bus``).
* ``docker``: when a Docker engine answers ``docker info``, pytest-docker brings up
  ``infra/docker-compose.yml`` and the fixtures point at its services. Its broker is
  PLAINTEXT without an authorizer: there the tests run, but prove no ACL.

``MXGATE_TEST_SERVICES=native|docker`` forces one. A service that cannot start fails the
test with the reason; nothing is skipped silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import factories
from support.bus import Bus
from support.pipeline import MakePipeline, Pipeline
from support.sink import SinkThread

from devstack.kafka import LocalKafka
from devstack.s3server import S3Server
from mxgate.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "infra" / "docker-compose.yml"

# Service names and ports in infra/docker-compose.yml that the docker path relies on.
COMPOSE_KAFKA_SERVICE = "kafka"
COMPOSE_KAFKA_PORT = 19092  # the HOST listener, advertised as 127.0.0.1
COMPOSE_S3_SERVICE = "s3"
COMPOSE_S3_PORT = 8333
COMPOSE_S3_ACCESS_KEY = "mxgate"
COMPOSE_S3_SECRET_KEY = "mxgate-secret"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration and tests/scenarios as ``integration``
    (``-m "not integration"`` then runs the quick suite without Java)."""
    real = {Path(__file__).parent / "integration", Path(__file__).parent / "scenarios"}
    for item in items:
        if real & set(item.path.parents):
            item.add_marker(pytest.mark.integration)


# -- where services come from ---------------------------------------------------------------


def _docker_engine_available() -> bool:
    """True when a Docker engine answers (the client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="session")
def service_mode() -> str:
    """``"docker"`` or ``"native"``: how this session provides Kafka and S3."""
    forced = os.environ.get("MXGATE_TEST_SERVICES", "").strip().lower()
    if forced in {"docker", "native"}:
        return forced
    if forced:
        raise pytest.UsageError(f"MXGATE_TEST_SERVICES must be docker or native, not {forced!r}")
    return "docker" if _docker_engine_available() else "native"


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    """pytest-docker: our compose file lives in infra/, not tests/."""
    return str(COMPOSE_FILE)


# -- Kafka --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka(
    request: pytest.FixtureRequest,
    service_mode: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Bus]:
    """One Kafka broker for the whole session: ``.bootstrap_servers``, and how each role
    reaches it (``.settings(role, ...)``, ``.env(role)``; see :mod:`support.bus`).

    Native: SASL_SSL with ACLs on, a user per role. Tests isolate themselves by creating
    their own topics and consumer groups, and grant the roles the catalog's ACLs on them
    (``.grant(topic_prefix, group_prefix, tiers)``; :class:`support.pipeline.Pipeline` does).
    """
    if service_mode == "docker":
        services = request.getfixturevalue("docker_services")
        ip = request.getfixturevalue("docker_ip")
        port = services.port_for(COMPOSE_KAFKA_SERVICE, COMPOSE_KAFKA_PORT)
        endpoint = Bus.open(f"{ip}:{port}")
        services.wait_until_responsive(
            check=lambda: _kafka_responds(endpoint.bootstrap_servers), timeout=120, pause=1
        )
        yield endpoint
        return
    bus = Bus.secured(tmp_path_factory.mktemp("bus"))
    try:
        yield bus
    finally:
        bus.stop()


def _kafka_responds(bootstrap: str) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request."""
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2}).list_topics(timeout=3)
    except Exception:
        return False
    return bool(md.brokers)


@pytest.fixture(scope="module")
def kafka_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """Three combined broker+controller nodes (RF 3, min ISR 2) for failover tests.

    Always native processes: failover tests kill and restart brokers by index. PLAINTEXT:
    they test ``LocalKafka``'s replication and failover, not the roles' rights.
    """
    cluster = LocalKafka(tmp_path_factory.mktemp("kafka3"), brokers=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# -- S3 -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server process (S3Proxy) on 127.0.0.1 for the whole session."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(request: pytest.FixtureRequest, service_mode: str) -> Iterator[S3Server]:
    """The session's S3 server, started, with its default bucket ``s3.bucket`` created.

    Tests that stop or break the server must use their own ``S3Server`` instead.
    """
    if service_mode == "docker":
        services = request.getfixturevalue("docker_services")
        ip = request.getfixturevalue("docker_ip")
        port = services.port_for(COMPOSE_S3_SERVICE, COMPOSE_S3_PORT)
        remote = S3Server.external(
            f"http://{ip}:{port}",
            access_key=COMPOSE_S3_ACCESS_KEY,
            secret_key=COMPOSE_S3_SECRET_KEY,
        )
        services.wait_until_responsive(check=remote.responds, timeout=120, pause=1)
        remote.create_bucket(remote.bucket)
        yield remote
        return
    server: S3Server = request.getfixturevalue("s3_server")
    server.create_bucket(server.bucket)
    yield server


@pytest.fixture
def s3_bucket(s3: S3Server) -> str:
    """A fresh, empty bucket on the session's S3 server (test isolation)."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(name)
    return name


# -- factories: settings, sinks, pipelines ------------------------------------------------


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build this test's settings (own topic prefix, store, tenants file under tmp_path):
    ``make_settings(kafka, receiver=ReceiverSettings(...))``, ``kafka`` the session's
    :class:`support.bus.Bus` (as its super user) or a bootstrap string."""

    def make(bus: Bus | str = "", **sections: Any) -> Settings:
        return factories.settings(tmp_path, bus, **sections)

    return make


@pytest.fixture
def sink() -> Iterator[SinkThread]:
    """A capture SMTP server on loopback standing in for a tenant's mail server."""
    server = SinkThread().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_pipeline(kafka: Bus, tmp_path: Path) -> Iterator[MakePipeline]:
    """Build receiver, scanner and deliverer processes on this test's own topics, each as
    its own principal: ``make_pipeline(sink.port, extra_env={...})``; every role is stopped
    at teardown."""
    made: list[Pipeline] = []

    def make(sink_port: int, **kwargs: Any) -> Pipeline:
        p = Pipeline(tmp_path, kafka, sink_port, **kwargs)
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            p.stop_all()
