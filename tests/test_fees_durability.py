"""Metering under OCSP load survives SIGKILL: every answer a client received is in the ledger
exactly once, nothing is billed that was never sent, and the month's invoice is the sum of the
prices of the answers, to the yen.

The fee journal (fees/journal.py) makes each answer's check durable before the answer leaves
and folds it into the ledger later; these tests kill the daemon between the two, at random
moments, five times over the same data directory.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ca import authority
from ca.kinds import CertKind
from jpki.context import Context
from registry.clock import JST
from tests.helpers import Daemon, issue_args, jpki, registry_rows

pytestmark = pytest.mark.engines

VERIFIERS = ("bank-a", "bank-b", "shop-c")
RESIDENTS = ("dur-1", "dur-2")
THREADS = 6
KILLS = 5


def request_for(ca: x509.Certificate, serial: int, nonce: bool) -> bytes:
    name_hash = hashlib.sha1(ca.subject.public_bytes()).digest()
    key_hash = hashlib.sha1(ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1)).digest()
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash, serial, hashes.SHA1())
    if nonce:  # the live path (RFC 8954: a nonce of 1 to 32 octets)
        builder = builder.add_extension(x509.OCSPNonce(secrets.token_bytes(16)), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


# What a request bills: (verifier, serial in hex, check type, status confirmation)
Key = tuple[str, str, str, bool]


def test_every_received_answer_is_billed_exactly_once(context: Context, tmp_path: Path
                                                      ) -> None:
    data_dir = context.data_dir
    tokens = {name: jpki(data_dir, "verifier", "add", name).json["token"]
              for name in VERIFIERS}
    cas = {kind: authority.current(context.store, kind).certificate
           for kind in (CertKind.SIGNATURE, CertKind.AUTHENTICATION)}
    certificates: list[tuple[CertKind, int, str]] = []  # kind, serial, resident
    for resident in RESIDENTS:
        result = jpki(data_dir, *issue_args(resident, tmp_path / resident))
        assert result.code == 0, result.err
        for kind in (CertKind.SIGNATURE, CertKind.AUTHENTICATION):
            certificates.append((kind, int(result.json[kind.value]["serial"], 16), resident))
    resident_of = {format(serial, "x"): resident for _kind, serial, resident in certificates}

    received: list[Key] = []   # answers the clients read in full
    unresolved: list[Key] = []  # requests sent whose answer never arrived (killed meanwhile)
    lock = threading.Lock()
    up = threading.Event()
    stop = threading.Event()
    daemon_box: list[Daemon] = []
    rng = random.Random(15)

    def one_request(pick: random.Random) -> tuple[Key, bytes, bool]:
        verifier = pick.choice(VERIFIERS)
        roll = pick.random()
        if roll < 0.4:  # an unknown serial: identifies its request alone in the ledger
            serial = secrets.randbits(120) | 1 << 119
            kind, check_type, confirm = CertKind.SIGNATURE, "unknown_check", False
        else:
            kind, serial, _resident = pick.choice(certificates)
            check_type = f"{kind.value}_check"
            # status confirmations on signature certificates: once per verifier, resident and
            # year at the signature price, later ones at the repeat rule's 0 yen
            confirm = kind is CertKind.SIGNATURE and pick.random() < 0.5
        body = request_for(cas[kind], serial, nonce=pick.random() < 0.2)
        return (verifier, format(serial, "x"), check_type, confirm), body, confirm

    def client(seed: int) -> None:
        pick = random.Random(seed)
        while not stop.is_set():
            if not up.wait(0.05):
                continue
            key, body, confirm = one_request(pick)
            headers = {"Content-Type": "application/ocsp-request",
                       "Authorization": f"Bearer {tokens[key[0]]}"}
            if confirm:
                headers["JPKI-Check-Purpose"] = "status-confirmation"
            request = urllib.request.Request(daemon_box[-1].url + "/ocsp", data=body,
                                             method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    der = response.read()
            except OSError:
                with lock:
                    unresolved.append(key)
                time.sleep(0.02)
                continue
            answer = ocsp.load_der_ocsp_response(der)
            assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
            assert format(answer.serial_number, "x") == key[1]
            with lock:
                received.append(key)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(KILLS):
            daemon_box.append(Daemon(data_dir).start())
            up.set()
            with lock:
                target = len(received) + rng.randint(40, 160)
            deadline = time.monotonic() + 15  # bounded even on a loaded machine
            while time.monotonic() < deadline:
                with lock:
                    if len(received) >= target:
                        break
                time.sleep(0.002)
            time.sleep(rng.random() * 0.05)  # a random moment under load
            daemon_box[-1].kill()  # SIGKILL: the journal and the ledger as they are
            up.clear()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for daemon in daemon_box:
            daemon.kill()

    assert len(received) >= KILLS * 40, "the load did not get going"
    # No daemon runs: the CLI folds every durable frame left in the journal (the invoice is
    # exact whatever state the daemon died in).
    month = f"{datetime.now(JST):%Y-%m}"
    invoice = jpki(data_dir, "fees", "invoice", "--month", month)
    assert invoice.code == 0, invoice.err
    rows = registry_rows(
        data_dir, "SELECT v.name, l.serial, l.check_type, l.status_confirmation, l.amount_yen,"
        " l.month FROM ledger l JOIN verifiers v ON v.id = l.verifier_id")
    assert {row[5] for row in rows} <= {month}

    billed = Counter((name, serial, check_type, bool(sc))
                     for name, serial, check_type, sc, _yen, _month in rows)
    got, maybe = Counter(received), Counter(unresolved)
    for key, count in got.items():
        assert count <= billed[key], f"a received answer is not billed: {key}"
    for key, count in billed.items():
        assert count <= got[key] + maybe[key], f"billed without an answer sent: {key}"
    extra = billed - got  # answered, made durable, and killed before the client read it
    assert sum(extra.values()) <= sum(maybe.values())
    unknown = [key for key in billed if key[2] == "unknown_check"]
    assert all(billed[key] == 1 for key in unknown), "an unknown-serial check billed twice"

    # The invoice, to the yen: each answer at the tariff's price for today, except that a
    # verifier pays one status confirmation per resident and year (the first).
    now = datetime.now(JST)
    tariff = context.tariff
    expected: Counter[str] = Counter()
    confirmed: set[tuple[str, str]] = set()
    for (name, serial, check_type, confirm), count in billed.items():
        price = tariff.price(check_type, "ocsp", now).yen
        if confirm:
            confirmed.add((name, resident_of[serial]))
            continue
        expected[name] += price * count
    for name, _resident in confirmed:
        expected[name] += tariff.price("signature_check", "ocsp", now).yen
    subtotals = {item["verifier"]: item["subtotal_yen"] for item in invoice.json["invoices"]}
    assert subtotals == {name: expected[name] for name in VERIFIERS if name in subtotals}
    assert set(subtotals) == {key[0] for key in billed}
    assert sum(row[4] for row in rows) == sum(expected.values())

    # the restarted daemon keeps the same ledger and bills new answers again, once
    restarted = Daemon(data_dir).start()
    try:
        body = request_for(cas[CertKind.SIGNATURE], secrets.randbits(64) | 1 << 63, False)
        request = urllib.request.Request(
            restarted.url + "/ocsp", data=body, method="POST",
            headers={"Content-Type": "application/ocsp-request",
                     "Authorization": f"Bearer {tokens['bank-a']}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        usage = jpki(data_dir, "fees", "usage").json["usage"]
        assert sum(row["checks"] for row in usage) == len(rows) + 1
    finally:
        restarted.stop()
