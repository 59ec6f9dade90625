"""Server-Sent Events: poll something cheap in a thread, send it when it changed, stop when the page goes."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

from genforge.web.common import dumps

KEEPALIVE_S = 15.0


def event_stream(request: Request, poll: Callable[[], Any | None], interval: float = 1.0,
                 limit: int | None = None) -> StreamingResponse:
    """An event stream of ``poll()``'s results; ``None`` means nothing new (a comment keeps the line open).

    ``limit`` ends the stream after that many events (the tests' streams end; the page's do not).
    """

    async def events():
        sent, quiet = 0, 0.0
        while limit is None or sent < limit:
            if await request.is_disconnected():
                return
            payload = await anyio.to_thread.run_sync(poll)
            if payload is not None:
                yield f"data: {dumps(payload)}\n\n"
                sent, quiet = sent + 1, 0.0
            elif quiet >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                quiet = 0.0
            if limit is not None and sent >= limit:
                return
            await asyncio.sleep(interval)
            quiet += interval

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
