"""The docs are part of the change: README lists every setting, schemas/README every event."""

from __future__ import annotations

from pathlib import Path

import schemas
from mxgate import catalog
from mxgate.settings_doc import markdown, reference

REPO = Path(__file__).resolve().parents[2]


def test_readme_documents_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [k for k, _, _ in reference() if f"`{k}`" not in readme]
    assert not missing, f"README.md lacks {missing}: run `mxgate settings --readme README.md`"
    assert markdown() in readme, "README's settings table is stale: `mxgate settings --readme`"


def test_readme_opens_with_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme and "make test" in readme


def test_schemas_readme_documents_every_topic_and_event() -> None:
    doc = (REPO / "schemas" / "README.md").read_text()
    for t in catalog.TOPICS:
        assert t.name in doc, t.name
    for name in schemas.EVENTS:
        assert name.rsplit(".", 1)[1] in doc, name


def test_every_setting_has_a_description_and_its_real_default() -> None:
    rows = list(reference())
    assert [k for k, _, desc in rows if not desc.strip()] == []
    defaults = {k: d for k, d, _ in rows}
    # A factory's value is shown, not a placeholder (only a host's own name stays one).
    assert defaults["MXGATE_SCANNER__ENGINE_TIMEOUTS"] == "{}"
    assert '"bayes": 1.0' in defaults["MXGATE_SCANNER__SPAM__WEIGHTS"]
    assert defaults["MXGATE_KAFKA__INSTANCE_ID"] == "(this host's name)"
