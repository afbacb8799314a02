"""Connection, rate and in-flight limits of one receiver process.

Each limit answers with the reply a sender's MTA understands: 421 4.7.0 closes a connection
that came too often or too many at once, 451 4.7.1 defers mail that comes too fast, 451 4.3.2
defers a body while too many are already in flight (backpressure instead of an unbounded
queue in memory). Counts are per process: with N workers sharing a port, a client can hold
at most N times a per-IP limit, which is the usual trade-off of SO_REUSEPORT.

Rates use a sliding one-minute window per IP kept as a deque of timestamps. Written by hand
(a dozen lines) because no library in the dependency set does it and the window must be
bounded in memory: idle IPs are forgotten by ``sweep``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from receiver import replies
from receiver.checks import CheckResult, accept, refuse

__all__ = ["ConnectionLimits", "InflightGate", "RateWindow"]


class RateWindow:
    """At most ``limit`` events per key in any ``window`` seconds."""

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def hit(self, key: str) -> bool:
        """Record one event for ``key``; False (and nothing recorded) when over the limit."""
        now = self._clock()
        q = self._events.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.limit:
            return False
        q.append(now)
        if len(self._events) > 10_000:
            self.sweep()
        return True

    def sweep(self) -> None:
        """Forget keys with no event inside the window (bounds memory under a scan)."""
        cutoff = self._clock() - self.window
        for key in [k for k, q in self._events.items() if not q or q[-1] <= cutoff]:
            del self._events[key]


class ConnectionLimits:
    """Concurrent connections overall and per IP, and the connection rate per IP."""

    def __init__(self, max_total: int, max_per_ip: int, rate_per_minute: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.rate = RateWindow(rate_per_minute)
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def open(self, ip: str) -> CheckResult:
        """Count a new connection from ``ip``: the ``limits`` check's result.

        A refused connection is not counted, so ``close`` is only for accepted ones.
        """
        if self.total >= self.max_total:
            return refuse("limits", "connections", replies.TOO_MANY_CONNECTIONS)
        if self.per_ip.get(ip, 0) >= self.max_per_ip:
            return refuse("limits", "connections_per_ip", replies.too_many_connections_from(ip))
        if not self.rate.hit(ip):
            return refuse("limits", "connection_rate", replies.connection_rate_exceeded(ip))
        self.total += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return accept("limits")

    def close(self, ip: str) -> None:
        """Forget an accepted connection from ``ip``."""
        self.total -= 1
        n = self.per_ip.get(ip, 0) - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            self.per_ip.pop(ip, None)


class InflightGate:
    """Bounded number of message bodies between DATA and the final reply.

    Memory held is at most ``limit`` x max message size; beyond that DATA gets 451 4.3.2
    before any body byte is read, so a slow store or Kafka turns into deferrals, not into
    a growing queue.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def try_enter(self) -> bool:
        """Take a slot; False when all are taken."""
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        """Give a slot back."""
        self.count -= 1
