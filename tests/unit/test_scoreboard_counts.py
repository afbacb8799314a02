"""The scoreboard's table keys, its JSON over partitions and window lengths, the stats client
against a real local HTTP server, and the CLI's table (no Kafka: decisions are built here)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import schemas
from cli.scoreboard import render_stats
from mxgate.settings import OpsSettings, Settings
from ops.scoreboard import (
    DAY,
    ScoreboardUnavailable,
    board,
    fetch_stats,
    table_keys,
    window_label,
    window_sizes,
)

T0 = dt.datetime(2026, 1, 1, 23, 30, tzinfo=dt.UTC)


def verdict(
    engine: str, outcome: str, ms: float = 1.0, shadow: bool = False
) -> schemas.EngineVerdict:
    return schemas.EngineVerdict(
        engine=engine, kind="antivirus", engine_version="1", rules_version="r", outcome=outcome,
        duration_ms=ms, shadow=shadow,
    )  # fmt: skip


def decision(minutes: float, *verdicts: schemas.EngineVerdict) -> schemas.MessageScanned:
    at = T0 + dt.timedelta(minutes=minutes)
    return schemas.MessageScanned(
        message_id="m", tenant="t", scanned_at=at, scanner="s", action="deliver", reasons=(),
        policy_version="1", verdicts=verdicts, mail_from="", rcpt_to=(), object_key="k",
        sha256="h", size=1, received_at=at,
    )  # fmt: skip


def count(
    table: Counter[str], rec: schemas.MessageScanned, sizes: tuple[float, ...], partition: int
) -> None:
    for key in table_keys(rec, sizes, partition):
        table[key] += 1


def test_partitions_never_share_a_key_and_the_board_sums_them_per_window_length() -> None:
    sizes = (3600.0, DAY)
    eicar = decision(0, verdict("yara", "infected", 2.0), verdict("content", "clean", 3.0))
    clean = decision(10, verdict("yara", "clean", 2.0), verdict("content", "clean", 3.0))
    late = decision(40, verdict("yara", "error", 2.0), verdict("content", "clean", 3.0))
    k0, k1 = table_keys(eicar, sizes, 0), table_keys(eicar, sizes, 1)
    assert not set(k0) & set(k1)  # each partition's counters live in its own store

    table: Counter[str] = Counter()
    count(table, eicar, sizes, 0)
    count(table, clean, sizes, 3)
    count(table, late, sizes, 5)  # 00:10 next day: a new hour and a new day
    out = board(table.items(), sizes)["windows"]
    assert list(out) == ["1h", "1d"] and out["1d"]["seconds"] == DAY
    hour = out["1h"]["engines"]["yara"]
    assert list(hour) == ["2026-01-01T23:00:00+00:00", "2026-01-02T00:00:00+00:00"]
    first = hour["2026-01-01T23:00:00+00:00"]
    assert first["messages"] == 2 and first["detections"] == 1 and first["detection_rate"] == 0.5
    assert first["unique_catches"] == 1 and first["disagreements"] == 1
    assert hour["2026-01-02T00:00:00+00:00"]["error_rate"] == 1.0
    day = out["1d"]["engines"]["content"]
    assert [w["messages"] for w in day.values()] == [2, 1]
    assert day["2026-01-01T00:00:00+00:00"]["disagreements"] == 1


def test_every_counted_window_length_is_listed_before_any_decision() -> None:
    assert board([], (900.0, DAY)) == {
        "windows": {
            "15m": {"seconds": 900.0, "engines": {}},
            "1d": {"seconds": DAY, "engines": {}},
        }
    }


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(3600, "1h"), (86_400, "1d"), (900, "15m"), (7200, "2h"), (90, "90s"), (0.5, "0.5s")],
)
def test_window_label(seconds: float, label: str) -> None:
    assert window_label(seconds) == label


def test_window_sizes_add_the_day_once() -> None:
    s = Settings()
    assert window_sizes(s) == (3600.0, DAY)
    daily = s.model_copy(update={"ops": OpsSettings(scoreboard_window=DAY)})
    assert window_sizes(daily) == (DAY,)


class _Handler(BaseHTTPRequestHandler):
    status = 200
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass  # keep pytest's output clean


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_fetch_stats_reads_the_json(http_server: tuple[str, type[_Handler]]) -> None:
    url, handler = http_server
    handler.body = json.dumps(board([], (3600.0,))).encode()
    assert fetch_stats(url + "/") == {"windows": {"1h": {"seconds": 3600.0, "engines": {}}}}


def test_fetch_stats_reports_a_server_error(http_server: tuple[str, type[_Handler]]) -> None:
    url, handler = http_server
    handler.status, handler.body = 500, b'{"error": "boom"}'
    with pytest.raises(ScoreboardUnavailable, match=r"answered 500: \{\"error\": \"boom\"\}"):
        fetch_stats(url)


def test_fetch_stats_says_when_no_worker_runs() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ScoreboardUnavailable, match="no scoreboard worker answers") as e:
        fetch_stats(f"http://127.0.0.1:{port}")
    assert "mxgate scoreboard run" in str(e.value)


def test_render_stats_one_line_per_engine_window_and_a_note_when_empty() -> None:
    table: Counter[str] = Counter()
    count(table, decision(0, verdict("yara", "infected"), verdict("clam", "error", shadow=True)),
          (3600.0,), 0)  # fmt: skip
    lines = render_stats(board(table.items(), (3600.0,)))
    assert lines[0].split()[:4] == ["engine", "win", "start", "msgs"]
    assert lines[1].split()[:4] == ["clam", "(shadow)", "1h", "2026-01-01T23:00:00+00:00"]
    assert lines[2].split()[:5] == ["yara", "1h", "2026-01-01T23:00:00+00:00", "1", "1"]
    assert render_stats(board([], (3600.0,)))[1:] == ["(no verdicts counted yet)"]
