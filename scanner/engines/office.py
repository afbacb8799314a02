"""Office documents through oletools: VBA macros, XLM macros, DDE links, encryption.

Reports ``match`` findings with symbols ``office:<what>`` that the tenant's
``Policy.blocked_office`` turns into an action (:func:`scanner.policy.decide`):

- ``office:vba-autoexec`` — a VBA macro that runs by itself (``AutoOpen``, ``Document_Open``,
  ``Workbook_Open`` ...: olevba's ``AutoExec`` keywords);
- ``office:vba-suspicious`` — a VBA macro using suspicious calls (``Shell``, ``CreateObject``,
  downloads ...: olevba's ``Suspicious`` keywords);
- ``office:vba-macro`` — any other VBA macro;
- ``office:xlm-macro`` — Excel 4.0 (XLM) macros: a macro sheet in an OOXML package
  (``xl/macrosheets/*.xml``, the xlsb binary ``*.bin``, or any part of a macrosheet content
  or relationship type), in a BIFF8 .xls (``BOUNDSHEET`` of type macro) or a SYLK file;
- ``office:xlm-auto-open`` — a defined name Excel runs on open or close (``Auto_Open``,
  ``_xlnm.Auto_Open``, ``Auto_Close``...: ``xl/workbook.xml``, xlsb ``BrtName``, BIFF8
  ``NAME``, SYLK ``NN``);
- ``office:dde-csv`` — a CSV cell (a part named ``.csv``/``.tsv`` or declared CSV) that Excel
  evaluates into a command: ``=cmd|' /C calc'!A0``, ``=DDE(``, ``@SUM(...)`` calling
  ``cmd``/``powershell``/``mshta``...;
- ``office:sylk`` — a SYLK file (``ID;`` header, whatever its name) whose formulas run
  commands (DDE, ``EXEC``, ``CALL``, ``REGISTER``...);
- ``office:dde`` — a DDE/DDEAUTO field (msodde), which runs commands without macros;
- ``office:encrypted`` — an encrypted document that no password at hand opened, which no
  scanner can look into;
- ``office:decrypted:default-password`` / ``office:decrypted:body-password`` — an encrypted
  document opened (msoffcrypto-tool) with Excel's default password ``VelvetSweatshop`` or a
  password the message carries (:func:`scanner.archive_passwords.candidates` over its text
  and Subject, as for archives); it is then analysed like any other, and its findings are
  reported under the same part. At most ``_MAX_PASSWORD_TRIALS`` tries per message and
  ``_PASSWORD_SECONDS`` per document (agile key derivation costs ~0.1 s a try). A sign to
  combine, not held by default (the document's own findings are);
- ``office:external-template`` — an OOXML relationship (any ``.rels`` member) of type
  ``attachedTemplate`` with ``TargetMode="External"``: Word fetches and runs the remote
  template on open (remote-template injection, CVE-2017-0199 style); ``detail`` also has
  ``office:external-template:target`` (the URL);
- ``office:external-relationship:<type>`` — another external relationship that loads
  content on open (``oleObject``, ``frame``, ``subDocument``), target likewise in ``detail``;
- ``office:rtf-object`` — an OLE object embedded in an RTF document (oletools' rtfobj);
- ``office:rtf-equation`` — one of class ``Equation.3`` (Equation Editor, CVE-2017-11882);
- ``office:embedded-executable`` — an embedded OLE Package (in RTF, OLE or OOXML) whose file
  name runs code (``.exe``, ``.lnk``, ``.js``, ...: the ``\x01Ole10Native`` stream, oleobj);
- ``office:equation-object`` — an Equation Editor object embedded in an OLE file or in an
  OOXML's ``embeddings`` (the same exploit as ``rtf-equation``, in another container).

Only parts whose bytes are OLE, OOXML/zip, RTF or SYLK are opened (the true type, not the
name), and CSV parts (by name or declared type, as Excel opens them). oletools parses hostile
files in pure Python and can take long or use much memory on a crafted one, so
this engine is meant to run isolated (``scanner.isolated`` default), where a timeout kills it.
oletools works on file names, so each candidate is written to a private temporary file.

Relationships are read with the standard library's ``xml.etree`` (defusedxml is not
installed): a ``.rels`` member with a DTD is not parsed (OOXML has none, and a DTD is how
entity expansion attacks start), members over ``_MAX_RELS_BYTES`` are skipped, and at most
``_MAX_RELS_MEMBERS`` are read, so a crafted package costs bounded time and memory.

XLM, CSV and SYLK are read by :mod:`scanner.engines.excel4` (standard library, bounded).

No settings. ``detail``: each symbol -> the first part path that raised it; for the XLM, CSV
and SYLK symbols also ``<symbol>:where`` -> the member, sheet, name or cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

from scanner.archive_passwords import BodyText, PasswordTrials, candidates
from scanner.engines import excel4
from scanner.engines.common import (
    EngineBase,
    EngineSpec,
    Finding,
    NoSettings,
    ParsedMessage,
    Part,
)
from scanner.mime import RAW_PATH

__all__ = ["ENGINE", "OfficeEngine"]

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP = b"PK\x03\x04"
# Parts bigger than this are not opened (the verdict says so): Office files with macros are
# small, and oletools' cost grows with the file.
_MAX_BYTES = 30 * 1024 * 1024
# RTF: Word opens "{\\rt" without the "f" too, which is what maldocs use to dodge signatures.
_RTF = b"{\\rt"
# Relationship parts: how many are read, and how big one may be (real ones are a few KiB).
_MAX_RELS_MEMBERS = 256
_MAX_RELS_BYTES = 1024 * 1024
_REL_TAG = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
# External relationship types that load content when the document opens (not hyperlinks,
# which wait for a click and are in every newsletter).
_EXTERNAL_TYPES = {"attachedTemplate", "oleObject", "frame", "subDocument"}
# File names of embedded packages that run when double-clicked.
_EXEC_EXT = (
    ".exe", ".com", ".scr", ".pif", ".bat", ".cmd", ".lnk", ".js", ".jse", ".vbs", ".vbe",
    ".wsf", ".wsh", ".hta", ".ps1", ".msi", ".dll", ".cpl", ".jar", ".sct", ".url", ".inf",
)  # fmt: skip
_MAX_TARGET = 500
# Microsoft Equation 3.0, the Equation Editor removed in 2018 for CVE-2017-11882.
_EQUATION_CLSID = "0002CE02-0000-0000-C000-000000000046"
# Encrypted documents: Excel's default password (a workbook "protected" without one is
# encrypted with it, and malware uses that to hide from scanners), the trials per message and
# the seconds they may take.
_DEFAULT_PASSWORD = "VelvetSweatshop"
_MAX_PASSWORD_TRIALS = 12
_PASSWORD_SECONDS = 5.0
# Office writes 100,000 hash rounds (~0.35 s a try here); a file may declare up to 10 million.
_MAX_SPIN = 100_000
_HOW = {
    "default-password": f"decrypted with Excel's default password {_DEFAULT_PASSWORD}",
    "body-password": "decrypted with a password found in the message",
}
# What Excel opens as comma- (or tab-) separated text.
_CSV_EXT = (".csv", ".tsv", ".tab")
_CSV_TYPES = {
    "text/csv", "text/x-csv", "application/csv", "application/x-csv",
    "text/comma-separated-values", "text/tab-separated-values",
}  # fmt: skip
# Zip members looked at for embedded OLE files.
_MAX_MEMBERS = 1000


def _is_ooxml(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(BytesIO(data)) as z:
            return "[Content_Types].xml" in z.namelist()
    except Exception:
        return False


class OfficeEngine(EngineBase):
    """The ``office`` policy engine (oletools). Safe to call concurrently."""

    name = "office"
    kind = "policy"
    cacheable = True

    def __init__(self) -> None:
        # oletools logs (and msodde may print) about every odd file; findings carry what matters.
        for name in ("olevba", "msodde", "crypto", "oleobj", "rtfobj", "oletools"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    @property
    def version(self) -> str:
        """The oletools version."""
        _import_oletools()
        import oletools

        return f"oletools-{getattr(oletools, '__version__', 'unknown')}"

    @property
    def rules_version(self) -> str:
        """olevba's keyword tables ship with oletools: the same version."""
        return self.version

    async def check(self, message: ParsedMessage) -> Finding:
        """Open every Office-looking part; ``match`` with what was found."""
        return await asyncio.to_thread(self.inspect, message)

    def inspect(self, message: ParsedMessage) -> Finding:
        """The synchronous work of :meth:`check`."""
        found: dict[str, str] = {}

        def hit(symbol: str, path: str, where: str) -> None:
            key = f"office:{symbol}"
            if key not in found:
                found[key] = path
                found[f"{key}:where"] = where

        # Passwords for encrypted documents: the well-known default, then the words the
        # message offers as passwords (as for archives); read only if a document needs them.
        trials = PasswordTrials(lambda: _passwords(message), _MAX_PASSWORD_TRIALS)
        for part in message.parts:
            if part.path == RAW_PATH or not part.data:
                continue
            head = part.data[:8]
            if excel4.is_sylk(head):
                for symbol, where in excel4.sylk(part.data):
                    hit(symbol, part.path, where)
                continue
            if head[:4] not in (_ZIP, _OLE[:4]) and _is_csv(part):
                for symbol, where in excel4.csv_formulas(part.data):
                    hit(symbol, part.path, where)
                continue
            rtf = head[:4] == _RTF
            ooxml = head[:4] == _ZIP and _is_ooxml(part.data)
            if not (head == _OLE or ooxml or rtf):
                continue
            if len(part.data) > _MAX_BYTES:
                found.setdefault("office:too-large", part.path)
                continue
            if rtf:
                for symbol in _rtf_objects(part.data):
                    found.setdefault(f"office:{symbol}", part.path)
                continue
            self._document(part.data, part.path, found, hit, trials)
        symbols = tuple(k for k in found if not k.endswith((":target", ":where")))
        return self.finding("match" if symbols else "clean", symbols=symbols, detail=found)

    def _document(
        self,
        data: bytes,
        path: str,
        found: dict[str, str],
        hit: Callable[[str, str, str], None],
        trials: PasswordTrials | None,
    ) -> None:
        """Analyse one OLE or OOXML document; an encrypted one is decrypted with the trials'
        passwords (``trials`` None: not again) and its plain text analysed the same way."""
        for symbol, where in _excel4(data):
            hit(symbol, path, where)
        if data[:4] == _ZIP:
            for symbol, target in _external_relationships(data):
                key = f"office:{symbol}"
                if key not in found:
                    found[key] = path
                    found[f"{key}:target"] = target[:_MAX_TARGET]
        symbols = _analyse(data)
        if symbols == ["encrypted"] and trials is not None:
            plain = _decrypt(data, trials)
            if plain is not None:
                plain_data, how = plain
                hit(f"decrypted:{how}", path, _HOW[how])
                self._document(plain_data, path, found, hit, None)
                return
        for symbol in symbols:
            found.setdefault(f"office:{symbol}", path)
        for symbol in _embedded(data):
            found.setdefault(f"office:{symbol}", path)


def _passwords(message: ParsedMessage) -> list[str]:
    """``VelvetSweatshop`` (Excel's default), then the message's password candidates
    (:func:`scanner.archive_passwords.candidates` over its text parts and Subject)."""
    subject = next((v for n, v in message.headers if n.lower() == "subject"), "")
    bodies = [
        BodyText(p.content_type, None, p.data)
        for p in message.parts
        if p.path != RAW_PATH and p.filename is None and p.content_type.startswith("text/")
    ]
    return [_DEFAULT_PASSWORD, *candidates(subject, bodies, _MAX_PASSWORD_TRIALS)]


def _decrypt(data: bytes, trials: PasswordTrials) -> tuple[bytes, str] | None:
    """The plain document and how its password was found (``default-password`` or
    ``body-password``), or None: no candidate opened it within the trials and
    ``_PASSWORD_SECONDS`` (key derivation costs ~0.1 s a try for agile encryption)."""
    import msoffcrypto  # oletools' own dependency, pinned for this use

    deadline = time.monotonic() + _PASSWORD_SECONDS
    for password in trials.candidates:
        if time.monotonic() > deadline or not trials.take():
            return None
        try:
            office = msoffcrypto.OfficeFile(BytesIO(data))
            agile = getattr(office, "type", None) == "agile"
            spin = office.info.get("spinValue", 0) if agile else 0
            if spin > _MAX_SPIN:
                return None  # a crafted key derivation: one try would outlast the engine
            try:
                office.load_key(password=password, verify_password=True)
            except TypeError:  # the 97-2003 formats verify in load_key without the option
                office.load_key(password=password)
            out = BytesIO()
            office.decrypt(out)
        except Exception:
            continue
        plain = out.getvalue()
        if plain[:8] == _OLE or plain[:4] == _ZIP:
            trials.worked(password)
            how = "default-password" if password == _DEFAULT_PASSWORD else "body-password"
            return plain, how
    return None


def _is_csv(part: Part) -> bool:
    """A part Excel opens as CSV: by its name (what Windows opens it by) or declared type."""
    name = (part.filename or "").lower().rstrip(". ")
    return name.endswith(_CSV_EXT) or part.content_type.lower() in _CSV_TYPES


def _excel4(data: bytes) -> list[tuple[str, str]]:
    """XLM macro sheets and auto-open names of an OOXML package or a BIFF8 workbook."""
    if data[:8] == _OLE:
        _import_oletools()
        from oletools import oleobj

        try:
            ole = oleobj.olefile.OleFileIO(data)
        except Exception:
            return []
        try:
            for stream in ("Workbook", "Book"):
                if ole.exists(stream):
                    with ole.openstream(stream) as f:
                        return excel4.biff8(f.read(_MAX_BYTES))
        except Exception:
            return []
        finally:
            ole.close()
        return []
    try:
        with zipfile.ZipFile(BytesIO(data)) as z:
            return excel4.ooxml(z)
    except Exception:
        return []


def _external_relationships(data: bytes) -> Iterator[tuple[str, str]]:
    """(symbol, target) for each external relationship that loads content on open."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as z:
            rels = [i for i in z.infolist() if i.filename.lower().endswith(".rels")]
            for info in rels[:_MAX_RELS_MEMBERS]:
                if info.file_size > _MAX_RELS_BYTES:
                    continue
                try:
                    with z.open(info) as f:
                        xml = f.read(_MAX_RELS_BYTES + 1)
                except Exception:
                    continue
                if len(xml) > _MAX_RELS_BYTES or b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
                    continue
                try:
                    root = ET.fromstring(xml)
                except ET.ParseError:
                    continue
                for rel in root.iter(_REL_TAG):
                    if rel.get("TargetMode", "").lower() != "external":
                        continue
                    kind = rel.get("Type", "").rsplit("/", 1)[-1]
                    if kind == "attachedTemplate":
                        yield "external-template", rel.get("Target", "")
                    elif kind in _EXTERNAL_TYPES:
                        yield f"external-relationship:{kind}", rel.get("Target", "")
    except Exception:
        return


def _runs_code(name: object) -> bool:
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    if not isinstance(name, str):
        return False
    return name.strip().strip("\0").lower().rstrip(". ").endswith(_EXEC_EXT)


def _rtf_objects(data: bytes) -> list[str]:
    """Symbols for the OLE objects embedded in an RTF document (oletools' rtfobj)."""
    _import_oletools()
    from oletools.rtfobj import RtfObjParser

    out: list[str] = []
    try:
        parser = RtfObjParser(data)
        parser.parse()
    except Exception:
        return ["unparsable"]
    for obj in parser.objects:
        if "rtf-object" not in out:
            out.append("rtf-object")
        name = obj.class_name if isinstance(obj.class_name, bytes) else b""
        if name.rstrip(b"\0").lower().startswith(b"equation") and "rtf-equation" not in out:
            out.append("rtf-equation")
        if obj.is_package and any(
            _runs_code(n) for n in (obj.filename, obj.src_path, obj.temp_path)
        ):
            if "embedded-executable" not in out:
                out.append("embedded-executable")
    return out


def _ole_files(data: bytes) -> Iterator[bytes]:
    """``data`` if it is an OLE file, else the OLE members of the zip (OOXML keeps embedded
    objects as ``word/embeddings/oleObject1.bin`` and the like), bounded in count and size."""
    if data[:8] == _OLE:
        yield data
        return
    try:
        with zipfile.ZipFile(BytesIO(data)) as z:
            for info in z.infolist()[:_MAX_MEMBERS]:
                if info.file_size > _MAX_BYTES or info.is_dir():
                    continue
                try:
                    with z.open(info) as f:
                        if f.read(8) != _OLE:
                            continue
                    yield z.read(info)
                except Exception:
                    continue
    except Exception:
        return


def _embedded(data: bytes) -> list[str]:
    """``embedded-executable``: an OLE Package (``\\x01Ole10Native``) in an OLE file or an
    OOXML's embedded OLE files whose file name runs code (oletools' oleobj);
    ``equation-object``: an embedded Equation Editor object (its class id or its
    ``Equation Native`` stream), the carrier of CVE-2017-11882 in OLE and OOXML files."""
    _import_oletools()
    from oletools import oleobj

    olefile = oleobj.olefile  # oletools' own dependency, through it (no pin of its own)
    out: list[str] = []
    for blob in _ole_files(data):
        try:
            ole = olefile.OleFileIO(blob)
        except Exception:
            continue
        try:
            clsid = str(getattr(ole.root, "clsid", "") or "").upper()
            if clsid == _EQUATION_CLSID or ole.exists("Equation Native"):
                if "equation-object" not in out:
                    out.append("equation-object")
            for entry in ole.listdir():
                if entry[-1].lower() != "\x01ole10native" or "embedded-executable" in out:
                    continue
                # One package's header is at most three paths: read no more than that.
                with ole.openstream(entry) as stream:
                    head = stream.read(64 * 1024)
                try:
                    pkg = oleobj.OleNativeStream(head)
                except Exception:
                    continue
                if any(_runs_code(n) for n in (pkg.filename, pkg.src_path, pkg.temp_path)):
                    out.append("embedded-executable")
        except Exception:
            continue
        finally:
            ole.close()
    return out


def _import_oletools() -> tuple[Any, Any, Any]:
    # oletools 0.60.2 calls pyparsing's pre-3.0 names at import time; the deprecation warnings
    # are oletools' to fix, and must not turn an import into an error under -W error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from oletools import crypto, msodde
        from oletools.olevba import VBA_Parser
    return crypto, msodde, VBA_Parser


def _analyse(data: bytes) -> list[str]:
    crypto, msodde, VBA_Parser = _import_oletools()

    out: list[str] = []
    fd, path = tempfile.mkstemp(prefix="mxgate-office-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        with contextlib.suppress(Exception):
            if crypto.is_encrypted(path):
                out.append("encrypted")
                return out
        vp = None
        try:
            vp = VBA_Parser(path)
            if vp.detect_vba_macros():
                kinds = {str(t) for t, _kw, _d in vp.analyze_macros()}
                if "AutoExec" in kinds:
                    out.append("vba-autoexec")
                if "Suspicious" in kinds:
                    out.append("vba-suspicious")
                if not out:
                    out.append("vba-macro")
            with contextlib.suppress(Exception):
                if vp.detect_xlm_macros():
                    out.append("xlm-macro")
        except Exception:
            out.append("unparsable")
        finally:
            if vp is not None:
                with contextlib.suppress(Exception):
                    vp.close()
        with contextlib.suppress(Exception), contextlib.redirect_stdout(None):
            links = msodde.process_file(path, msodde.FIELD_FILTER_BLACKLIST)
            if links and links.strip():
                out.append("dde")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return out


def build(settings: NoSettings) -> OfficeEngine:
    """The engine (it reads no settings: the tenant's policy says which symbols act)."""
    return OfficeEngine()


ENGINE = EngineSpec(OfficeEngine, NoSettings, build)
"""The registry's entry for ``office``."""
