"""Connection, rate and in-flight limits of one receiver process.

Each limit answers with the reply a sender's MTA understands: 421 4.7.0 closes a connection
that came too often or too many at once, 451 4.7.1 defers mail that comes too fast, 451 4.3.2
defers a body while too many are already in flight (backpressure instead of an unbounded
queue in memory). Counts are per process: with N workers sharing a port, a client can hold
at most N times a per-IP limit, which is the usual trade-off of SO_REUSEPORT.

Bodies in flight are bounded three ways (:class:`InflightGate`): slots, slots per IP and a
budget in bytes; a body that arrives slower than a minimum rate (:class:`DataRate`) loses its
session, so a few IPs trickling bytes cannot hold what everyone else needs.

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

__all__ = ["BodySlot", "ConnectionLimits", "DataRate", "InflightGate", "RateWindow"]


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
    """Bodies between their first line and the final reply: a count, a count per client IP
    and a budget in bytes (the sum of the bodies received so far), all per process.

    A slot is taken when the first body line arrives (:meth:`enter`), not at DATA, so a
    client that says DATA and then waits holds only its connection. Each body line grows
    the slot (:meth:`BodySlot.grow`) and the byte budget refuses the line that would pass
    it; bodies stream to the store as they arrive, so the budget bounds the bytes in flight
    (spool space, and the chunk buffers in memory) rather than whole bodies held in RAM.
    :meth:`check` answers the same questions without taking anything (an early 451 at DATA).
    """

    def __init__(self, limit: int, per_ip: int | None = None, max_bytes: int = 0) -> None:
        self.limit = limit
        self.per_ip_limit = per_ip if per_ip is not None else limit
        self.max_bytes = max_bytes  # 0: no byte budget
        self.count = 0
        self.bytes = 0
        self.per_ip: dict[str, int] = {}

    def check(self, ip: str) -> CheckResult:
        """Whether a body from ``ip`` would get a slot now (nothing is taken)."""
        if self.count >= self.limit:
            return refuse("inflight", "backpressure", replies.BUSY)
        if self.per_ip.get(ip, 0) >= self.per_ip_limit:
            return refuse("inflight", "per_ip", replies.too_many_bodies_from(ip))
        if self.max_bytes and self.bytes >= self.max_bytes:
            return refuse("inflight", "byte_budget", replies.RECEIVER_FULL)
        return accept("inflight")

    def enter(self, ip: str) -> BodySlot | CheckResult:
        """Take a slot for a body from ``ip``, or the refusing result."""
        result = self.check(ip)
        if not result.accepted:
            return result
        self.count += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return BodySlot(self, ip)

    def try_enter(self) -> bool:
        """Take an anonymous slot (count only); False when all are taken."""
        slot = self.enter("")
        return isinstance(slot, BodySlot)

    def leave(self) -> None:
        """Give back an anonymous slot taken by :meth:`try_enter`."""
        self._release("", 0)

    def _release(self, ip: str, size: int) -> None:
        self.count -= 1
        self.bytes -= size
        n = self.per_ip.get(ip, 0) - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            self.per_ip.pop(ip, None)


class BodySlot:
    """One body's share of an :class:`InflightGate`; :meth:`release` gives it back once."""

    def __init__(self, gate: InflightGate, ip: str) -> None:
        self.gate = gate
        self.ip = ip
        self.size = 0
        self.released = False

    def grow(self, n: int) -> CheckResult:
        """Count ``n`` more bytes of this body; the refusal when they would pass the budget."""
        gate = self.gate
        if gate.max_bytes and gate.bytes + n > gate.max_bytes:
            return refuse("inflight", "byte_budget", replies.RECEIVER_FULL)
        gate.bytes += n
        self.size += n
        return accept("inflight")

    def release(self) -> None:
        """Give the slot and its bytes back (idempotent)."""
        if not self.released:
            self.released = True
            self.gate._release(self.ip, self.size)


class DataRate:
    """A minimum data rate: at least ``min_rate`` bytes/s in every ``window`` seconds.

    The session calls :meth:`check` once per window (from a timer, so a client that sends
    nothing at all is caught too); time the receiver itself spent writing to the store
    (:meth:`stalled`) is not held against the client.
    """

    def __init__(
        self, min_rate: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.min_rate = min_rate
        self.window = window
        self._clock = clock
        self._since = clock()
        self._bytes = 0
        self._stalled = 0.0

    def feed(self, n: int) -> None:
        """``n`` bytes arrived."""
        self._bytes += n

    def stalled(self, seconds: float) -> None:
        """The receiver did not read for ``seconds`` (its own store write)."""
        self._stalled += seconds

    def check(self) -> CheckResult:
        """The ``data_rate`` result for the window that ends now; starts the next one."""
        now = self._clock()
        elapsed = max(0.0, now - self._since - self._stalled)
        got = self._bytes
        self._since, self._bytes, self._stalled = now, 0, 0.0
        if self.min_rate and got < self.min_rate * elapsed:
            return refuse("data_rate", "too_slow", replies.data_too_slow(self.min_rate))
        return accept("data_rate")
