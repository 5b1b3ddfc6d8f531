"""The ceiling of the stack: a bare aiohttp handler returning a fixed body (same loop, same
runner options as `jpki serve`). Usage: bare_aiohttp.py PORT BODY_SIZE."""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web


async def main(port: int, size: int) -> None:
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
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    print("ready", flush=True)
    while True:
        await __import__("asyncio").sleep(3600)


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
