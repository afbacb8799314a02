"""Content rules read the text extracted from PDF and OOXML attachments (GTUBE hidden in a
compressed page or split over Word runs), bounded; benign documents add no hit."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st
from support import maldoc_samples as ms

from scanner.engines import doc_text, pdf
from scanner.engines.common import Finding
from scanner.engines.content_rules import ContentRulesEngine
from scanner.mime import parse


def _content(name: str, data: bytes) -> Finding:
    m = EmailMessage()
    m.set_content("see attached")
    m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    parsed = parse(m.as_bytes(), message_id="m", tenant="t")
    return asyncio.run(ContentRulesEngine().check(parsed))


def test_gtube_in_a_compressed_pdf_page_is_found() -> None:
    for split in (True, False):
        data = ms.pdf_with_text(split=split)
        assert ms.GTUBE not in data
        f = _content("offer.pdf", data)
        assert f.outcome == "spam"
        assert f.symbols == ("GTUBE",)
        assert f.detail["GTUBE"].endswith("offer.pdf#text")


def test_pdf_text_reads_the_text_operators() -> None:
    text = pdf.text(ms.pdf_with_text(b"Quarterly report"))
    assert text.splitlines() == [b"Hello (reader)", b"Quarterly report"]
    assert pdf.text(ms.pdf_plain()) == b"Learn JavaScript in a week\n"


def test_gtube_split_over_word_runs_in_a_docx_is_found() -> None:
    data = ms.docx_with_text()
    f = _content("offer.docx", data)
    assert f.symbols == ("GTUBE",)
    assert f.detail["GTUBE"].endswith("offer.docx#text")


def test_documents_without_the_needle_are_clean() -> None:
    assert _content("a.pdf", ms.pdf_with_text(b"Dear customer, see the report")).outcome == "clean"
    assert _content("a.docx", ms.docx_with_text("Meeting notes for Monday")).outcome == "clean"


def test_extracted_text_is_bounded() -> None:
    assert len(pdf.text(ms.pdf_with_text(b"x" * 5000, split=False), limit=100)) == 100
    assert len(doc_text.ooxml_text(ms.docx_with_text("y" * 5000), limit=100)) == 100


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_text_extraction_never_raises_on_random_bytes(data: bytes) -> None:
    pdf.text(b"%PDF-1.7\n1 0 obj\n<< >>\nstream\n" + data)
    pdf._show_text(data, bytearray(), 10_000)
    doc_text.ooxml_text(b"PK\x03\x04" + data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=4000))
def test_damaged_documents_never_raise(noise: bytes, at: int) -> None:
    for doc in (ms.pdf_with_text(), ms.docx_with_text()):
        at_ = at % len(doc)
        damaged = doc[:at_] + noise + doc[at_ + len(noise) :]
        pdf.text(damaged)
        doc_text.ooxml_text(damaged)


def test_a_stream_of_crafted_tokens_is_cut_by_the_step_budget() -> None:
    import zlib

    content = b"(x)Tj " * 700_000  # 700,000 operators: more than the steps a PDF may take
    packed = zlib.compress(content)
    doc = ms.pdf([b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed])
    lines = pdf.text(doc).count(b"\n")
    assert 0 < lines <= pdf._TEXT_MAX_STEPS // 2  # a string and an operator per line
