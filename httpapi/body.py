"""Reading a request body with a size limit, for every route that reads one."""

from __future__ import annotations

from aiohttp import web


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than `limit` (checked before and while reading).

    The caller bounds the time (asyncio.timeout(read_timeout) -> 408: README, "Slow clients").
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
