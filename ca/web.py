"""GET /ca/: every CA generation and link certificate, for chain building and trust set-up.

Public material only; this face holds no private key.
"""

from __future__ import annotations

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca import authority, rotation
from ca.kinds import CertKind
from ca.urls import ca_cert_path, link_cert_path
from registry.errors import NotFound
from registry.store import Store


def routes(store: Store, base_url: str) -> list[web.RouteDef]:
    async def listing(request: web.Request) -> web.Response:
        items = []
        for generation in authority.generations(store):
            path = ca_cert_path(generation.kind, generation.generation)
            items.append({
                "kind": generation.kind.value,
                "generation": generation.generation,
                "serial": format(generation.serial, "x"),
                "key_id": generation.key_id,
                "not_before": generation.certificate.not_valid_before_utc.isoformat(),
                "not_after": generation.not_after.isoformat(),
                "fingerprint": generation.fingerprint,
                "retired": generation.retired,
                "der": base_url + path,
                "pem": base_url + path.removesuffix(".der") + ".pem",
            })
        numbers = {ca.id: ca.generation for ca in authority.generations(store)}
        links = []
        for link in rotation.links(store):
            old, new = numbers[link.old_ca_id], numbers[link.new_ca_id]
            path = link_cert_path(link.kind, old, new, link.direction)
            links.append({
                "kind": link.kind.value,
                "direction": link.direction,
                "old_generation": old,
                "new_generation": new,
                "serial": format(link.certificate.serial_number, "x"),
                "not_before": link.certificate.not_valid_before_utc.isoformat(),
                "not_after": link.certificate.not_valid_after_utc.isoformat(),
                "der": base_url + path,
                "pem": base_url + path.removesuffix(".der") + ".pem",
            })
        return web.json_response({"certificates": items, "links": links})

    async def certificate(request: web.Request) -> web.Response:
        try:
            kind = CertKind.from_short(request.match_info["kind"])
            generation = int(request.match_info["generation"])
        except ValueError:
            raise web.HTTPNotFound() from None
        fmt = request.match_info["fmt"]
        try:
            item = authority.by_generation(store, kind, generation)
        except NotFound:
            raise web.HTTPNotFound() from None
        return _certificate_response(item.certificate, fmt)

    async def link(request: web.Request) -> web.Response:
        try:
            kind = CertKind.from_short(request.match_info["kind"])
        except ValueError:
            raise web.HTTPNotFound() from None
        numbers = {ca.id: ca.generation for ca in authority.generations(store, kind)}
        wanted = (int(request.match_info["old"]), int(request.match_info["new"]),
                  request.match_info["direction"].replace("-", "_"))
        for item in rotation.links(store, kind):
            if (numbers[item.old_ca_id], numbers[item.new_ca_id], item.direction) == wanted:
                return _certificate_response(item.certificate, request.match_info["fmt"])
        raise web.HTTPNotFound()

    # A generation number is bounded in the route itself: more digits than any generation
    # would ever have is a 404 here, never an int SQLite cannot bind (OverflowError) or one
    # Python refuses to parse (over 4,300 digits, ValueError).
    return [
        web.get("/ca/", listing),
        web.get(r"/ca/{kind}/g{generation:\d{1,9}}.{fmt:der|pem}", certificate),
        web.get(r"/ca/{kind}/g{old:\d{1,9}}-g{new:\d{1,9}}-{direction:new-with-old|old-with-new}"
                r".{fmt:der|pem}", link),
    ]


def _certificate_response(certificate: x509.Certificate, fmt: str) -> web.Response:
    if fmt == "pem":
        return web.Response(body=certificate.public_bytes(Encoding.PEM),
                            content_type="application/x-pem-file")
    return web.Response(body=certificate.public_bytes(Encoding.DER),
                        content_type="application/pkix-cert")
