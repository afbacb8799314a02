"""250 means safe: with the store refusing writes, the receiver answers 451 and leaves nothing a
later stage would act on."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import samples
from support.factories import NO_VERIFICATION
from support.pipeline import Pipeline, received_ids

pytestmark = pytest.mark.integration


def test_store_refusing_writes_answers_451(kafka, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the store's parent directory should be")
    p = Pipeline(
        tmp_path,
        kafka,
        sink_port=1,
        recipients=NO_VERIFICATION,  # nothing at port 1 to verify recipients with
        store_env={"MXGATE_STORE__PATH": str(blocker / "store")},
    )
    try:
        p.start("receiver")
        code, text = p.send(samples.clean_message(1), ["u@example.test"])
        assert code == 451 and "4.3.0" in text, text
        code, text = p.send(samples.clean_message(2), ["u@nowhere.test"])
        assert code == 550 and "5.7.1" in text, text
        assert received_ids(p) == []
    finally:
        p.stop_all()
