"""Serve a role's Prometheus metrics: the default registry on ``/metrics``, while it runs.

The consume loops' counters (:mod:`mxgate.kafka`: dead letters, batch failures, unknown
schemas), the control topic's rejections and the deliverer's own counters are module-level
and so live in prometheus-client's default registry; the scanner and the deliverer serve that
registry. (The receiver keeps its own registry per worker, :mod:`receiver.metrics`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from mxgate.errors import ConfigError

__all__ = ["serve_metrics"]

log = structlog.get_logger("mxgate.metrics")


@contextmanager
def serve_metrics(
    host: str, port: int, setting: str, registry: CollectorRegistry = REGISTRY
) -> Iterator[int | None]:
    """Serve ``registry`` on ``http://host:port/metrics`` until the block ends; yields the port.

    ``port`` 0 serves nothing (yields None). ``setting`` is the environment variable that chose
    the port (e.g. ``MXGATE_SCANNER__METRICS_PORT``): a port that cannot be bound (taken, no
    such address) is a :class:`ConfigError` naming it, raised before the role starts its work.
    """
    if not port:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        # The usual cause is a second instance (or another role) on the same port.
        raise ConfigError(
            "environment", setting, f"cannot serve metrics on {host}:{port}: {e.strerror or e}"
        ) from None
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    log.info("metrics served", url=f"http://{shown}:{port}/metrics")
    try:
        yield port
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
