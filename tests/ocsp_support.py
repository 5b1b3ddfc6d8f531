"""The composed OCSP responder for in-process tests, and a clock built from the data.

Shared by tests/test_ocsp_sources.py and tests/test_ocsp_hardening.py (test modules do not
import each other's helpers).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import core, keys
from asn1crypto import x509 as asn1_x509

from httpapi.arrivals import Arrivals
from jpki.context import Context
from jpki.settings import load_settings
from ocsp.auth import VerifierDirectory
from ocsp.cache import PresignedCache
from ocsp.issuers import IssuerIndex
from ocsp.live import AnswerPolicy
from ocsp.meter import CheckMeter, NoMeter
from ocsp.responder import Responder
from ocsp.signing import SigningPool
from registry.clock import FrozenClock, from_epoch
from registry.store import Store
from tests.helpers import CONFIG


def data_clock(data_dir: Path) -> FrozenClock:
    """Ten minutes after the newest responder certificate's notBefore (which is backdated 5
    minutes, ca/responders.py): inside every certificate's validity, whenever the test runs."""
    store = Store.open(data_dir)
    try:
        newest = store.conn.execute("SELECT MAX(not_before) FROM ocsp_signers").fetchone()[0]
    finally:
        store.close()
    return FrozenClock(from_epoch(int(newest)) + timedelta(minutes=10))


def build(data_dir: Path, clock: FrozenClock, *, anonymous: bool = True,
          meter: CheckMeter | None = None, queue_limit: int = 16,
          arrivals: Arrivals | None = None) -> Responder:
    context = Context(load_settings(CONFIG, data_dir), clock)
    store = Store.open(data_dir)
    return Responder(
        store=store, issuers=IssuerIndex(store, context.responder_keys, ("sha1", "sha256")),
        cache=PresignedCache(1000), pool=SigningPool(2, queue_limit),
        directory=VerifierDirectory(store, anonymous), meter=meter or NoMeter(),
        clock=clock,
        policy=AnswerPolicy(timedelta(hours=24), 0.5, frozenset({"sha1", "sha256"})),
        arrivals=arrivals,
    )


def forged_certificate(rng: random.Random, bits: int, exponent: int,
                       version: object = "v3") -> asn1_x509.Certificate:
    """A self-signed-looking certificate around an RSA key nobody holds: any odd modulus of
    `bits` bits. The attack needs no private key, because verifying a wrong signature costs
    the same modular exponentiation as a right one."""
    modulus = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
    name = asn1_x509.Name.build({"common_name": "attacker"})
    now = datetime.now(UTC)
    tbs = asn1_x509.TbsCertificate({
        "version": version, "serial_number": rng.getrandbits(64),
        "signature": {"algorithm": "sha256_rsa"}, "issuer": name, "subject": name,
        "validity": {"not_before": asn1_x509.Time({"utc_time": now - timedelta(days=1)}),
                     "not_after": asn1_x509.Time({"utc_time": now + timedelta(days=30)})},
        "subject_public_key_info": keys.PublicKeyInfo({
            "algorithm": {"algorithm": "rsa", "parameters": core.Null()},
            "public_key": keys.RSAPublicKey({"modulus": modulus,
                                             "public_exponent": exponent})}),
    })
    return asn1_x509.Certificate({"tbs_certificate": tbs,
                                  "signature_algorithm": {"algorithm": "sha256_rsa"},
                                  "signature_value": rng.randbytes(256)})
