"""250 means safe: with the broker stopped, the receiver answers 451 and leaves nothing a later
stage would act on. The broker is secured as production's (its own, since the test stops it),
so the receiver connects as its own principal."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import samples
from support.bus import Bus
from support.factories import NO_VERIFICATION
from support.pipeline import Pipeline, queued_id, received_ids

pytestmark = pytest.mark.integration


def test_broker_down_answers_451(tmp_path: Path) -> None:
    broker = Bus.secured(tmp_path / "bus")
    p = Pipeline(
        tmp_path,
        broker,
        sink_port=1,
        extra_env={"MXGATE_RECEIVER__ACCEPT_TIMEOUT": "5"},
        recipients=NO_VERIFICATION,  # nothing at port 1 to verify recipients with
    )
    try:
        p.start("receiver")
        code, text = p.send(samples.clean_message(1), ["u@example.test"])
        assert code == 250, text
        first = queued_id(text)
        broker.stop()
        code, text = p.send(samples.clean_message(2), ["u@example.test"])
        assert code == 451 and "4.3.0" in text, text
        assert p.stop("receiver") == 0
        # The broker comes back: only the message answered 250 is on the topic.
        broker.start()
        assert received_ids(p) == [first]
    finally:
        p.stop_all()
        broker.stop()
