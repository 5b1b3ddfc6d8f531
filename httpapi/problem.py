"""RFC 9457 problem details: the error body of every JSON API (not OCSP, which has its own)."""

from __future__ import annotations

from aiohttp import web


def problem(status: int, title: str, detail: str, **extra: object) -> web.Response:
    return web.json_response({"type": "about:blank", "title": title, "status": status,
                              "detail": detail, **extra}, status=status,
                             content_type="application/problem+json")
