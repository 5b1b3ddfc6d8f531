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
        labels = {ca.id: ca.label for ca in authority.generations(store)}
        links = []
        for link in rotation.links(store):
            serial = format(link.certificate.serial_number, "x")
            path = link_cert_path(link.kind, serial)
            links.append({
                "kind": link.kind.value,
                "direction": link.direction,
                "old": labels.get(link.old_ca_id),
                "new": labels.get(link.new_ca_id),
                "serial": serial,
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
        for item in authority.generations(store, kind):
            if item.generation == generation:
                return _certificate_response(item.certificate, fmt)
        raise web.HTTPNotFound()

    async def link(request: web.Request) -> web.Response:
        try:
            kind = CertKind.from_short(request.match_info["kind"])
        except ValueError:
            raise web.HTTPNotFound() from None
        for item in rotation.links(store, kind):
            if format(item.certificate.serial_number, "x") == request.match_info["serial"]:
                return _certificate_response(item.certificate, request.match_info["fmt"])
        raise web.HTTPNotFound()

    return [
        web.get("/ca/", listing),
        web.get(r"/ca/{kind}/g{generation:\d+}.{fmt:der|pem}", certificate),
        web.get(r"/ca/{kind}/link-{serial:[0-9a-f]{1,40}}.{fmt:der|pem}", link),
    ]


def _certificate_response(certificate: x509.Certificate, fmt: str) -> web.Response:
    if fmt == "pem":
        return web.Response(body=certificate.public_bytes(Encoding.PEM),
                            content_type="application/x-pem-file")
    return web.Response(body=certificate.public_bytes(Encoding.DER),
                        content_type="application/pkix-cert")
