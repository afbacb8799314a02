"""Excel 4.0 (XLM) macros in xlsm, xlsb and xls, and command formulas in CSV and SYLK files
(the office engine with :mod:`scanner.engines.excel4`); each with a benign look-alike."""

from __future__ import annotations

from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st
from support import maldoc_samples as ms

from mxgate.tenants import Policy
from scanner.engines import excel4
from scanner.engines.common import Finding
from scanner.engines.office import OfficeEngine
from scanner.mime import parse
from scanner.policy import decide


def _office(name: str, data: bytes, ctype: str = "application/octet-stream") -> Finding:
    m = EmailMessage()
    m.set_content("see attached")
    main, sub = ctype.split("/")
    m.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return OfficeEngine().inspect(parse(m.as_bytes(), message_id="m", tenant="t"))


def _held(f: Finding) -> bool:
    return decide([f], Policy()).action == "quarantine"


# --- XLM macro sheets and auto-open names -------------------------------------------------------


def test_xlsm_macrosheet_and_auto_open_name_are_found_and_held() -> None:
    f = _office("budget.xlsm", ms.xlsm_xlm())
    assert set(f.symbols) == {"office:xlm-macro", "office:xlm-auto-open"}
    assert f.detail["office:xlm-macro"].endswith("budget.xlsm")
    assert f.detail["office:xlm-macro:where"] == "xl/macrosheets/sheet1.xml"
    assert f.detail["office:xlm-auto-open:where"] == "xl/workbook.xml:_xlnm.Auto_Open"
    d = decide([f], Policy())
    assert d.action == "quarantine"
    assert {"office:office:xlm-macro", "office:office:xlm-auto-open"} <= set(d.reasons)


def test_xlsm_macrosheet_found_by_its_content_type_wherever_it_lives() -> None:
    import io
    import zipfile

    src, buf = zipfile.ZipFile(io.BytesIO(ms.xlsm_xlm(auto_open=None))), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            data = src.read(info).replace(b"macrosheets/sheet1.xml", b"misc/data1.xml")
            out.writestr(info.filename.replace("macrosheets/sheet1.xml", "misc/data1.xml"), data)
    f = _office("b.xlsm", buf.getvalue())
    assert f.symbols == ("office:xlm-macro",)
    assert f.detail["office:xlm-macro:where"] == "/xl/misc/data1.xml"


def test_auto_open_variants_are_names_excel_runs() -> None:
    for name in ("Auto_Open", "auto_open21", "_xlnm.Auto_Close", "AUTO_OPEN"):
        f = _office("b.xlsm", ms.xlsm_xlm(auto_open=name))
        assert "office:xlm-auto-open" in f.symbols, name


def test_xlsb_binary_macrosheet_and_brtname_auto_open_are_found() -> None:
    f = _office("report.xlsb", ms.xlsb_xlm())
    assert set(f.symbols) == {"office:xlm-macro", "office:xlm-auto-open"}
    assert f.detail["office:xlm-macro:where"] == "xl/macrosheets/sheet1.bin"
    assert f.detail["office:xlm-auto-open:where"] == "xl/workbook.bin:Auto_Open"
    assert _held(f)


def test_xls_macro_sheet_and_auto_open_name_record_are_found() -> None:
    f = _office("budget.xls", ms.xls_xlm(), "application/vnd.ms-excel")
    assert set(f.symbols) == {"office:xlm-macro", "office:xlm-auto-open"}
    assert f.detail["office:xlm-macro:where"] == "sheet Macro1 (very hidden)"
    assert f.detail["office:xlm-auto-open:where"] == "name Auto_Open"
    assert _held(f)
    spelled = _office("b.xls", ms.xls_xlm(builtin=False, hidden=0), "application/vnd.ms-excel")
    assert spelled.detail["office:xlm-macro:where"] == "sheet Macro1"
    assert spelled.detail["office:xlm-auto-open:where"] == "name Auto_Open"


def test_workbooks_without_macro_sheets_are_clean() -> None:
    assert _office("a.xlsx", ms.xlsm_xlm(auto_open=None, macrosheet=False)).symbols == ()
    assert _office("a.xlsb", ms.xlsb_xlm(auto_open=None, macrosheet=False)).symbols == ()
    plain = ms.xls_xlm(macro_sheet=False, auto_open=False)
    assert _office("a.xls", plain, "application/vnd.ms-excel").symbols == ()


# --- CSV and SYLK ---------------------------------------------------------------------------------


def test_csv_dde_formula_is_found_with_its_cell_and_held() -> None:
    f = _office("export.csv", ms.CSV_DDE, "text/csv")
    assert f.symbols == ("office:dde-csv",)
    assert f.detail["office:dde-csv"].endswith("export.csv")
    assert f.detail["office:dde-csv:where"].startswith("=cmd|' /C calc'!A0")
    assert _held(f)


def test_csv_injection_variants_are_found() -> None:
    for sample in ms.CSV_DDE_VARIANTS:
        f = _office("data.csv", sample)  # by the name: Windows opens .csv with Excel
        assert f.symbols == ("office:dde-csv",), sample[:50]


def test_csv_with_ordinary_formulas_pipes_and_command_words_is_clean() -> None:
    assert _office("data.csv", ms.CSV_PLAIN, "text/csv").symbols == ()
    # Text that is not a CSV is not read as one.
    assert _office("notes.txt", ms.CSV_DDE, "text/plain").symbols == ()


def test_sylk_exec_macro_is_found_and_held() -> None:
    f = _office("invoice.slk", ms.SYLK_EXEC)
    assert set(f.symbols) == {"office:xlm-macro", "office:xlm-auto-open", "office:sylk"}
    assert f.detail["office:sylk:where"] == 'C;X1;Y1;K0;EEXEC("calc.exe")'
    assert f.detail["office:xlm-auto-open:where"] == "NN;Auto_open"
    assert _held(f)
    # SYLK is found by its bytes: named .xls, Excel opens it all the same.
    f = _office("invoice.xls", ms.SYLK_DDE)
    assert f.symbols == ("office:sylk",)
    assert _held(f)


def test_sylk_with_plain_formulas_is_clean() -> None:
    assert _office("table.slk", ms.SYLK_PLAIN).symbols == ()


# --- fuzz: random bytes give findings or nothing, never an exception ----------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_parsers_never_raise_on_random_bytes(data: bytes) -> None:
    excel4.biff8(data)
    excel4._xlsb_names(data)
    excel4.csv_formulas(data)
    excel4.sylk(b"ID;" + data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=4000))
def test_damaged_workbooks_never_raise(noise: bytes, at: int) -> None:
    for doc in (ms.xls_xlm(), ms.xlsb_xlm()):
        at_ = at % len(doc)
        damaged = doc[:at_] + noise + doc[at_ + len(noise) :]
        f = _office("x.xls", damaged)
        assert f.outcome in ("match", "clean")
