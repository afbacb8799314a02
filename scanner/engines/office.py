"""Office documents through oletools: VBA macros, XLM macros, DDE links, encryption.

Reports ``match`` findings with symbols ``office:<what>`` that the tenant's
``Policy.blocked_office`` turns into an action (:func:`scanner.policy.decide`):

- ``office:vba-autoexec`` — a VBA macro that runs by itself (``AutoOpen``, ``Document_Open``,
  ``Workbook_Open`` ...: olevba's ``AutoExec`` keywords);
- ``office:vba-suspicious`` — a VBA macro using suspicious calls (``Shell``, ``CreateObject``,
  downloads ...: olevba's ``Suspicious`` keywords);
- ``office:vba-macro`` — any other VBA macro;
- ``office:xlm-macro`` — Excel 4.0 (XLM) macros;
- ``office:dde`` — a DDE/DDEAUTO field (msodde), which runs commands without macros;
- ``office:encrypted`` — an encrypted document, which no scanner can look into.

Only parts whose bytes are OLE or OOXML/zip are opened (the true type, not the name). oletools
parses hostile files in pure Python and can take long or use much memory on a crafted one, so
this engine is meant to run isolated (``scanner.isolated`` default), where a timeout kills it.
oletools works on file names, so each candidate is written to a private temporary file.

No settings. ``detail``: each symbol -> the first part path that raised it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import warnings
import zipfile
from io import BytesIO
from typing import Any

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
        for name in ("olevba", "msodde", "crypto", "oletools"):
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
        for part in message.parts:
            if part.path == RAW_PATH or not part.data:
                continue
            head = part.data[:8]
            if not (head == _OLE or (head[:4] == _ZIP and _is_ooxml(part.data))):
                continue
            if len(part.data) > _MAX_BYTES:
                found.setdefault("office:too-large", part.path)
                continue
            for symbol in _analyse(part):
                found.setdefault(f"office:{symbol}", part.path)
        symbols = tuple(found)
        return self.finding("match" if symbols else "clean", symbols=symbols, detail=found)


def _import_oletools() -> tuple[Any, Any, Any]:
    # oletools 0.60.2 calls pyparsing's pre-3.0 names at import time; the deprecation warnings
    # are oletools' to fix, and must not turn an import into an error under -W error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from oletools import crypto, msodde
        from oletools.olevba import VBA_Parser
    return crypto, msodde, VBA_Parser


def _analyse(part: Part) -> list[str]:
    crypto, msodde, VBA_Parser = _import_oletools()

    out: list[str] = []
    fd, path = tempfile.mkstemp(prefix="mxgate-office-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(part.data)
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
