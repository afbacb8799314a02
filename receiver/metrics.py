"""Prometheus metrics of the receiver (prometheus-client), one registry per server."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ReceiverMetrics"]


class ReceiverMetrics:
    """Sessions, replies by code, bytes received and accept latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions = Counter("mxgate_receiver_sessions", "SMTP sessions opened.", registry=r)
        self.sessions_active = Gauge(
            "mxgate_receiver_sessions_active", "SMTP sessions open now.", registry=r
        )
        self.replies = Counter(
            "mxgate_receiver_replies", "SMTP replies sent, by basic code.", ["code"], registry=r
        )
        self.bytes = Counter(
            "mxgate_receiver_bytes", "Message bytes received (accepted or not).", registry=r
        )
        self.messages = Counter(
            "mxgate_receiver_messages", "Messages by outcome.", ["outcome"], registry=r
        )
        self.rejections = Counter(
            "mxgate_receiver_rejections",
            "Refusals by check and reason (and checks that failed open).",
            ["check", "reason"],
            registry=r,
        )
        self.inflight = Gauge(
            "mxgate_receiver_inflight", "Bodies being received or made durable.", registry=r
        )
        self.accept_latency = Histogram(
            "mxgate_receiver_accept_seconds",
            "End of DATA to the 250: store put + Kafka ack.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )

    def reply(self, line: str) -> None:
        """Count one reply line (only final lines: "NNN text", not "NNN-text")."""
        if len(line) >= 4 and line[3] == " " and line[:3].isdigit():
            self.replies.labels(line[:3]).inc()

    def serve(self, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
        """Serve /metrics on ``host:port``; returns the (server, thread) to shut down."""
        return start_http_server(port, addr=host, registry=self.registry)
