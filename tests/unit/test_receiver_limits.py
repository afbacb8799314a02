"""Connection, rate and in-flight limits answer with the right reply and release slots."""

from __future__ import annotations

from receiver.limits import ConnectionLimits, InflightGate, RateWindow


class Clock:
    """A clock the test moves by hand (time is an input here, not a collaborator)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_window_slides() -> None:
    clock = Clock()
    w = RateWindow(2, window=60.0, clock=clock)
    assert w.hit("a") and w.hit("a")
    assert not w.hit("a")
    assert w.hit("b")  # per key
    clock.now += 61
    assert w.hit("a")


def test_rate_window_forgets_idle_keys() -> None:
    clock = Clock()
    w = RateWindow(5, window=10.0, clock=clock)
    for i in range(100):
        w.hit(f"10.0.0.{i}")
    clock.now += 11
    w.sweep()
    assert w._events == {}


def test_connection_limits_total_per_ip_and_rate() -> None:
    lim = ConnectionLimits(max_total=3, max_per_ip=2, rate_per_minute=100)
    assert lim.open("1.1.1.1").accepted
    assert lim.open("1.1.1.1").accepted
    refused = lim.open("1.1.1.1")
    assert (refused.check, refused.verdict, refused.reason) == (
        "limits",
        "tempfail",
        "connections_per_ip",
    )
    reply = refused.reply
    assert reply.startswith("421 4.7.0") and "1.1.1.1" in reply
    assert lim.open("2.2.2.2").accepted
    refused = lim.open("3.3.3.3")
    assert (refused.verdict, refused.reason) == ("tempfail", "connections")
    assert refused.reply.startswith("421 4.7.0 Too many connections")
    lim.close("1.1.1.1")
    assert lim.open("3.3.3.3").accepted
    assert lim.total == 3 and lim.per_ip == {"1.1.1.1": 1, "2.2.2.2": 1, "3.3.3.3": 1}


def test_connection_rate_limit() -> None:
    lim = ConnectionLimits(max_total=100, max_per_ip=100, rate_per_minute=2)
    for _ in range(2):
        assert lim.open("9.9.9.9").accepted
        lim.close("9.9.9.9")
    refused = lim.open("9.9.9.9")
    assert (refused.verdict, refused.reason) == ("tempfail", "connection_rate")
    assert "rate" in refused.reply and refused.reply.startswith("421 4.7.0")
    assert lim.total == 0 and lim.per_ip == {}


def test_inflight_gate_is_bounded() -> None:
    g = InflightGate(2)
    assert g.try_enter() and g.try_enter()
    assert not g.try_enter()
    g.leave()
    assert g.try_enter()
