"""The scanner's and the deliverer's /metrics: settings, serving, and a taken port.

* ``metrics_port`` / ``metrics_host`` of both roles are validated like every port, and a bad
  value is one line naming its variable.
* :func:`mxgate.metrics.serve_metrics` serves the default registry over real HTTP on loopback
  while its block runs and frees the port after; port 0 serves nothing.
* A taken port stops `mxgate run scanner|deliverer` at start with one line naming the setting.
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from support.cli import MXGATE
from support.pipeline import free_port

from mxgate.errors import ConfigError
from mxgate.kafka import DEAD_LETTERED
from mxgate.metrics import serve_metrics
from mxgate.settings import DelivererSettings, ScannerSettings, Settings


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MXGATE_")}


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        return str(r.read().decode())


@pytest.mark.parametrize("model", [ScannerSettings, DelivererSettings])
def test_metrics_settings_default_off_on_loopback_and_bounded(model: type) -> None:
    s = model()
    assert (s.metrics_port, s.metrics_host) == (0, "127.0.0.1")
    assert model(metrics_port=9140).metrics_port == 9140
    for bad in (-1, 65536):
        with pytest.raises(ValidationError, match="metrics_port"):
            model(metrics_port=bad)


def test_the_environment_sets_each_role_s_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXGATE_SCANNER__METRICS_PORT", "9140")
    monkeypatch.setenv("MXGATE_DELIVERER__METRICS_PORT", "9141")
    monkeypatch.setenv("MXGATE_DELIVERER__METRICS_HOST", "::1")
    monkeypatch.setenv("MXGATE_METRICS_PORT", "9120")
    s = Settings()
    assert (s.scanner.metrics_port, s.deliverer.metrics_port, s.metrics_port) == (9140, 9141, 9120)
    assert (s.scanner.metrics_host, s.deliverer.metrics_host) == ("127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MXGATE_SCANNER__METRICS_PORT", "70000"),
        ("MXGATE_DELIVERER__METRICS_PORT", "nine"),
        ("MXGATE_METRICS_PORT", "-5"),
    ],
)
def test_a_bad_port_is_one_line_naming_its_variable(tmp_path: Path, key: str, value: str) -> None:
    r = subprocess.run(
        [MXGATE, "run", "scanner"],
        cwd=tmp_path, env=_clean_env() | {key: value}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout
    assert "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: environment: {key}: "), line


def _dead(port: int, group: str) -> float | None:
    labels = {"group": group, "topic": "t", "cause": "handler"}
    for family in text_string_to_metric_families(_scrape(port)):
        for sample in family.samples:
            if sample.name == "mxgate_kafka_dead_lettered_total" and sample.labels == labels:
                return float(sample.value)
    return None


def test_served_while_the_block_runs_and_freed_after() -> None:
    group = f"g{uuid.uuid4().hex}"
    port = free_port()
    with serve_metrics("127.0.0.1", port, "MXGATE_SCANNER__METRICS_PORT") as served:
        assert served == port
        assert _dead(port, group) is None
        # The default registry, where the consume loops count their dead letters.
        DEAD_LETTERED.labels(group, "t", "handler").inc()
        assert _dead(port, group) == 1.0
    with pytest.raises(urllib.error.URLError):
        _scrape(port)
    # Freed: the next start on the same port works.
    with serve_metrics("127.0.0.1", port, "MXGATE_SCANNER__METRICS_PORT"):
        assert _dead(port, group) == 1.0


def test_port_zero_serves_nothing() -> None:
    with serve_metrics("127.0.0.1", 0, "MXGATE_SCANNER__METRICS_PORT") as served:
        assert served is None


def test_a_taken_port_is_a_config_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(ConfigError, match=f"127.0.0.1:{port}") as e,
            serve_metrics("127.0.0.1", port, "MXGATE_DELIVERER__METRICS_PORT"),
        ):
            raise AssertionError("served on a taken port")
    assert e.value.key == "MXGATE_DELIVERER__METRICS_PORT"


@pytest.mark.parametrize("role", ["scanner", "deliverer"])
def test_a_role_on_a_taken_port_stops_at_start_with_one_line(tmp_path: Path, role: str) -> None:
    key = f"MXGATE_{role.upper()}__METRICS_PORT"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # No broker at all: the port is checked before the role connects to anything.
        env = _clean_env() | {key: str(port), "MXGATE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
        r = subprocess.run(
            [MXGATE, "run", role],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: environment: {key}: cannot serve metrics on 127.0.0.1:{port}")
