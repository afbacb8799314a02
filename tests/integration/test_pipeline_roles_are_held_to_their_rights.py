"""Least privilege, proved on the suite's own broker: an ordinary test pipeline whose receiver,
scanner and deliverer each run as their own principal (the catalog's ACLs on the pipeline's
topics, nothing more) delivers mail, and the broker refuses each role's credentials outside
its rights: the receiver cannot write the deliverer's submit topic or a control switch, the
scanner cannot release from quarantine nor switch an engine off, the deliverer cannot forge a
received message. Only ops' signed switch counts.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError
from pydantic import SecretStr
from support import samples
from support.bus import Bus
from support.kafkaprobe import produce_error
from support.pipeline import MakePipeline, wait_for
from support.sink import SinkThread

from mxgate import catalog
from mxgate.enginecontrol import publish_control, read_control

pytestmark = pytest.mark.integration

CONTROL_KEY = "pipeline-control-key"


def _refused(role: str, err: KafkaError | None) -> None:
    assert err is not None, f"{role} was let write"
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (role, err)


def test_each_role_of_a_pipeline_is_refused_outside_its_rights(
    kafka: Bus, sink: SinkThread, make_pipeline: MakePipeline
) -> None:
    if not kafka.is_secured:
        pytest.skip("docker compose's broker is PLAINTEXT: no principals, no ACLs to prove")
    p = make_pipeline(sink.port, extra_env={"MXGATE_KAFKA__CONTROL_KEY": CONTROL_KEY})
    p.start_all()
    # Their own rights suffice: a message goes through all three roles.
    code, text = p.send(samples.clean_message(1), [samples.DEFAULT_RECIPIENT])
    assert code == 250, text
    wait_for(lambda: sink.messages, 90, "the delivery")

    def topic(t: catalog.Topic) -> str:
        return catalog.name(t, p.prefix)

    receiver = p.role_settings("receiver").kafka
    scanner = p.role_settings("scanner").kafka
    deliverer = p.role_settings("deliverer").kafka
    # The probe writes where a role may (so a refusal below is the ACL, not the probe).
    assert produce_error(receiver, topic(catalog.RECEIVED)) is None
    _refused("receiver", produce_error(receiver, topic(catalog.SUBMIT)))
    _refused("receiver", produce_error(receiver, topic(catalog.CONTROL)))
    _refused("scanner", produce_error(scanner, topic(catalog.SUBMIT)))
    _refused("scanner", produce_error(scanner, topic(catalog.QUARANTINE)))
    _refused("deliverer", produce_error(deliverer, topic(catalog.RECEIVED)))
    _refused("deliverer", produce_error(deliverer, topic(catalog.CONTROL)))

    # The scanner may write the control topic (its engine status), but a switch it writes
    # without ops' key is ignored by every scanner; ops' signed one counts.
    assert scanner.control_key.get_secret_value() == CONTROL_KEY  # what scanners verify with
    forged = scanner.model_copy(update={"control_key": SecretStr("")})
    publish_control(forged, "yara", enabled=False, reason="forged by a scanner")
    view = read_control(scanner)
    assert view.disabled_reason("yara") is None and view.rejected == 1
    publish_control(p.role_settings("ops").kafka, "yara", enabled=False, reason="ops")
    assert read_control(scanner).disabled_reason("yara") == "ops"
