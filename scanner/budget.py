"""The scanner's memory budget for decoded content.

A batch's bodies are bounded by ``scanner.batch_bytes`` (the consume loop closes a batch at
that many bytes). What parsing makes of them is bounded here: the MIME parts and archive
members of a parsed message (up to ``UnpackLimits.max_total_bytes`` of members each) stay in
memory until its verdict, and a batch of messages that each unpack a large archive would
otherwise hold them all at once. :class:`DecodedBudget` parses one message at a time, only
while the decoded bytes held by the messages being scanned are below its limit, and counts
each parse's bytes until the message is decided. So what is held stays under the limit plus
one message's worth; a message bigger than the whole limit is still parsed (when nothing
else is held), never stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from scanner.engines.common import ParsedMessage

__all__ = ["DecodedBudget", "decoded_size"]


def decoded_size(parsed: ParsedMessage) -> int:
    """Bytes a parsed message holds beyond its raw body: its decoded leaves (MIME parts and
    archive members)."""
    return sum(len(p.data) for p in parsed.parts)


class DecodedBudget:
    """Admits parses while the decoded bytes held are below ``limit`` (see the module)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self.held = 0
        """Decoded bytes of the messages parsed and not yet decided."""
        self.peak = 0
        """The most ``held`` has been (for tests and benchmarks)."""
        # Created on first use: asyncio primitives bind to the loop they first wait on.
        self._turn: asyncio.Lock | None = None
        self._room: asyncio.Condition | None = None

    @contextlib.asynccontextmanager
    async def parsed(
        self, parse: Callable[[], Awaitable[ParsedMessage]]
    ) -> AsyncIterator[ParsedMessage]:
        """Run ``parse`` when there is room and yield its result; its decoded bytes count
        against the budget until the block is left (the message's verdict is in)."""
        if self._turn is None or self._room is None:
            self._turn, self._room = asyncio.Lock(), asyncio.Condition()
        room = self._room
        async with self._turn:  # one parse at a time: what each adds is known before the next
            async with room:
                await room.wait_for(lambda: self.held < self.limit)
            message = await parse()
            size = decoded_size(message)
            self.held += size
            self.peak = max(self.peak, self.held)
        try:
            yield message
        finally:
            self.held -= size
            async with room:
                room.notify_all()
