"""The receiver advertises its SIZE limit and refuses a message over it, before and after DATA."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import samples
from support.factories import NO_VERIFICATION
from support.pipeline import Pipeline, received_ids

pytestmark = pytest.mark.integration


def test_size_is_advertised_and_enforced(kafka, tmp_path: Path) -> None:
    import smtplib

    p = Pipeline(
        tmp_path,
        kafka,
        sink_port=1,
        recipients=NO_VERIFICATION,  # nothing at port 1 to verify recipients with
        extra_env={"MXGATE_RECEIVER__MAX_MESSAGE_SIZE": "20000"},
    )
    try:
        p.start("receiver")
        with smtplib.SMTP("127.0.0.1", p.receiver_port, timeout=30) as c:
            c.ehlo("client.test")
            assert c.has_extn("size") and c.esmtp_features["size"] == "20000"
            # Declared too large: refused at MAIL FROM.
            code, _ = c.mail("a@sender.test", ["SIZE=30000"])
            assert code == 552
            c.rset()
            # Undeclared but too large: refused after DATA, and nothing is accepted.
            c.mail("a@sender.test")
            c.rcpt("u@example.test")
            code, _ = c.data(samples.clean_message(1) + (b"x" * 98 + b"\r\n") * 300)
            assert code == 552
        assert received_ids(p) == []
    finally:
        p.stop_all()
