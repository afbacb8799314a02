"""Everything the receiver relies on inside aiosmtpd (1.4.6), in one place.

``GatewaySMTP`` replaces aiosmtpd's session loop and several of its commands, which needs
aiosmtpd's private members. This module is the only one that names them: :class:`CompatSMTP`
wraps each in a public method or property, and :data:`PRIVATE_MEMBERS` lists them so that
``tests/unit/test_aiosmtpd_compat.py`` can pin every one (exists, callable with the expected
signature). An aiosmtpd upgrade that moves any of them fails that test, not a live session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP

__all__ = ["PRIVATE_MEMBERS", "CompatSMTP"]

# name -> (kind, parameters after self). "method": a function of the SMTP class; "coroutine":
# an async one; "attribute": an instance attribute set by SMTP.__init__ or the connection.
PRIVATE_MEMBERS: dict[str, tuple[str, tuple[str, ...]]] = {
    # Hooks aiosmtpd calls and we override.
    "_handle_client": ("coroutine", ()),
    "_timeout_cb": ("method", ()),
    "_getaddr": ("method", ("arg",)),
    # Helpers we call.
    "_reset_timeout": ("method", ("duration",)),
    "_set_rset_state": ("method", ()),
    "_set_post_data_state": ("method", ()),
    "_call_handler_hook": ("coroutine", ("command", "args")),
    # State we read or change.
    "_smtp_methods": ("attribute", ()),
    "_proxy_timeout": ("attribute", ()),
    "_tls_handshake_okay": ("attribute", ()),
    "_tls_protocol": ("attribute", ()),
    "_timeout_handle": ("attribute", ()),
    "_reader": ("attribute", ()),
    "_writer": ("attribute", ()),
    "__ident__": ("attribute", ()),
}


class CompatSMTP(SMTP):
    """aiosmtpd's ``SMTP`` with its private members behind public names.

    A subclass implements :meth:`run_session` (the whole session after the connection is
    made) and :meth:`on_timeout`; aiosmtpd calls them through its own private hooks.
    """

    line_length_limit: int  # read by SMTP.__init__ to size the StreamReader

    def __init__(self, handler: Any, *, line_length_limit: int, **kwargs: Any) -> None:
        """``SMTP(handler, **kwargs)`` with its reader sized for ``line_length_limit``."""
        # aiosmtpd sizes its StreamReader from this attribute inside __init__.
        self.line_length_limit = line_length_limit
        super().__init__(handler, **kwargs)

    # -- hooks aiosmtpd calls ---------------------------------------------------------------

    async def _handle_client(self) -> None:
        await self.run_session()

    def _timeout_cb(self) -> None:
        self.on_timeout()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # The email package's address parser aiosmtpd uses raises more than the
        # HeaderParseError aiosmtpd catches (IndexError on "\x01@"): any failure is a
        # malformed address (553 5.1.3), never an internal error.
        try:
            return super()._getaddr(arg)
        except Exception:
            return None, None

    async def run_session(self) -> None:
        """The session from the connection to its end (aiosmtpd's ``_handle_client``)."""
        raise NotImplementedError

    def on_timeout(self) -> None:
        """The idle timer fired (aiosmtpd's ``_timeout_cb``)."""
        raise NotImplementedError

    # -- commands ---------------------------------------------------------------------------

    def drop_command(self, verb: str) -> None:
        """Never answer ``verb`` (it becomes an unknown command)."""
        self._smtp_methods.pop(verb, None)

    def command(self, verb: str) -> Callable[[str | None], Awaitable[None]] | None:
        """The ``smtp_<VERB>`` method for ``verb``, or None when there is none."""
        method: Callable[[str | None], Awaitable[None]] | None = self._smtp_methods.get(verb)
        return method

    async def call_handler_hook(self, command: str, *args: Any) -> Any:
        """The handler's ``handle_<command>`` result (aiosmtpd's MISSING when it has none)."""
        return await self._call_handler_hook(command, *args)

    def reset_transaction(self) -> None:
        """Forget the envelope, as HELO/EHLO/RSET do."""
        self._set_rset_state()

    def end_transaction(self) -> None:
        """A fresh envelope after DATA."""
        self._set_post_data_state()

    # -- timers -----------------------------------------------------------------------------

    def reset_timeout(self, duration: float | None = None) -> None:
        """Restart the idle timer (``duration`` None: the session's command timeout)."""
        self._reset_timeout(duration)

    def cancel_timeout(self) -> None:
        """Stop the idle timer (until the next :meth:`reset_timeout`)."""
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()

    @property
    def proxy_timeout(self) -> float | None:
        """Seconds to wait for a PROXY header; None when none is expected."""
        value: float | None = self._proxy_timeout
        return value

    # -- streams and TLS --------------------------------------------------------------------

    @property
    def reader(self) -> asyncio.StreamReader:
        """The connection's reader (replaced by aiosmtpd when STARTTLS completes)."""
        reader: asyncio.StreamReader = self._reader
        return reader

    def close_writer(self) -> None:
        """Close the connection's writer."""
        self._writer.close()

    def discard_buffered_input(self) -> bool:
        """Drop bytes already read but not yet consumed; True when there were some."""
        # asyncio.StreamReader keeps read-ahead bytes in this private buffer.
        buffer: bytearray = self._reader._buffer  # type: ignore[attr-defined]
        had = bool(buffer)
        buffer.clear()
        return had

    @property
    def tls_active(self) -> bool:
        """STARTTLS has been accepted on this connection."""
        return self._tls_protocol is not None

    @property
    def tls_handshake_okay(self) -> bool:
        """False when the handler's STARTTLS hook refused the client's certificate."""
        return bool(self._tls_handshake_okay)

    @property
    def ident(self) -> str:
        """The software name shown in the banner."""
        return str(self.__ident__)
