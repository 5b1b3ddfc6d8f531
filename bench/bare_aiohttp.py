"""The ceiling of the stack: a bare aiohttp handler returning a fixed body (same loop, same
runner options as `jpki serve`). Usage: bare_aiohttp.py PORT BODY_SIZE [deadline].

With `deadline` it listens through httpapi.deadline (the request-header deadline of
`jpki serve`) instead of TCPSite, so the two rows side by side price that wrapper.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web

from httpapi import deadline


async def main(port: int, size: int, with_deadline: bool) -> None:
    body = b"\x30" * size
    headers = {"Content-Type": "application/ocsp-response",
               "Cache-Control": "max-age=3600, public, no-transform, must-revalidate"}

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.add_routes([web.post("/ocsp", handler), web.get("/healthz", handler)])
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    if with_deadline:
        await deadline.listen(runner, "127.0.0.1", port, request_timeout=10)
    else:
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    print("ready", flush=True)
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:] == ["deadline"]))
