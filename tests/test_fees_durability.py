"""Group-committed metering under OCSP load survives SIGKILL: every response a client received
is in the ledger exactly once, and nothing is billed that was not answered or in flight."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import urllib.request
from collections import Counter

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ca import authority
from ca.kinds import CertKind
from jpki.context import Context
from tests.helpers import Daemon, jpki


def request_for(ca: x509.Certificate, serial: int) -> bytes:
    name_hash = hashlib.sha1(ca.subject.public_bytes()).digest()
    key_hash = hashlib.sha1(ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1)).digest()
    return (ocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(name_hash, key_hash, serial, hashes.SHA1())
            .build().public_bytes(serialization.Encoding.DER))


def test_every_received_response_is_billed_exactly_once(context: Context) -> None:
    token = jpki(context.data_dir, "verifier", "add", "load-bank").json["token"]
    ca = authority.current(context.store, CertKind.SIGNATURE).certificate
    daemon = Daemon(context.data_dir).start()
    received: list[str] = []
    sent: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def client() -> None:
        for _ in range(400):  # bounded
            if killed.is_set():
                return
            serial = secrets.randbits(120) | 1 << 119
            body = request_for(ca, serial)
            request = urllib.request.Request(
                daemon.url + "/ocsp", data=body, method="POST",
                headers={"Content-Type": "application/ocsp-request",
                         "Authorization": f"Bearer {token}"})
            with lock:
                sent.append(format(serial, "x"))
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    der = response.read()
            except OSError:
                return
            answer = ocsp.load_der_ocsp_response(der)
            assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
            assert answer.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
            assert answer.serial_number == serial
            with lock:
                received.append(format(serial, "x"))
                if len(received) == 150 and not killed.is_set():
                    killed.set()
                    daemon.kill()  # SIGKILL under load

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert killed.is_set() and len(received) >= 150
    with sqlite3.connect(context.data_dir / "registry.db") as conn:
        rows = conn.execute(
            "SELECT l.serial, l.check_type, l.channel FROM ledger l JOIN verifiers v"
            " ON v.id = l.verifier_id WHERE v.name = 'load-bank'").fetchall()
    billed = Counter(serial for serial, _type, _channel in rows)
    assert all(check_type == "unknown_check" and channel == "ocsp"
               for _serial, check_type, channel in rows)
    assert all(billed[serial] == 1 for serial in received), "a received answer is not billed"
    assert max(billed.values()) == 1, "a check was billed twice"
    assert set(billed) <= set(sent), "a check was billed that no client sent"
    # the restarted daemon keeps the same ledger and bills new answers again
    restarted = Daemon(context.data_dir).start()
    try:
        with sqlite3.connect(context.data_dir / "registry.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == len(rows)
    finally:
        restarted.stop()
