"""GET /ca/: the CA certificates of every generation, for chain building and trust set-up.

Public material only; this face holds no private key.
"""

from __future__ import annotations

from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from ca import authority
from ca.kinds import CertKind
from ca.urls import ca_cert_path
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
                "der": base_url + path,
                "pem": base_url + path.removesuffix(".der") + ".pem",
            })
        return web.json_response({"certificates": items})

    async def certificate(request: web.Request) -> web.Response:
        try:
            kind = CertKind.from_short(request.match_info["kind"])
            generation = int(request.match_info["generation"])
        except ValueError:
            raise web.HTTPNotFound() from None
        fmt = request.match_info["fmt"]
        for item in authority.generations(store, kind):
            if item.generation == generation:
                if fmt == "pem":
                    return web.Response(body=item.certificate.public_bytes(Encoding.PEM),
                                        content_type="application/x-pem-file")
                return web.Response(body=item.certificate.public_bytes(Encoding.DER),
                                    content_type="application/pkix-cert")
        raise web.HTTPNotFound()

    return [
        web.get("/ca/", listing),
        web.get(r"/ca/{kind}/g{generation:\d+}.{fmt:der|pem}", certificate),
    ]
