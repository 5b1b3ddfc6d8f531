"""Plain policy objects built from the settings, handed to the role packages.

The roles never read the settings model (nor import this package): the CLI, `jpki serve` and
`jpki signer` build what a role needs here and pass it in.
"""

from __future__ import annotations

from ca.keybackend import KeyBackend
from ca.responders import ResponderCertificatePolicy
from crl.generator import CRLPolicy, Generator
from crl.publisher import Publisher
from jpki.settings import Settings
from registry.clock import Clock
from registry.store import Store


def responder_policy(settings: Settings) -> ResponderCertificatePolicy:
    ocsp = settings.ocsp
    return ResponderCertificatePolicy(validity_days=ocsp.responder_validity_days,
                           renew_before_days=ocsp.renew_before_days,
                           key_size=settings.ca.key_size)


def crl_policy(settings: Settings, start_method: str = "spawn") -> CRLPolicy:
    crl = settings.crl
    return CRLPolicy(base_url=settings.server.public_base_url, grace_hours=crl.grace_hours,
                     lookback_days=crl.lookback_days, workers=crl.workers,
                     parallel_threshold=crl.parallel_threshold, start_method=start_method,
                     delta_interval_minutes=crl.delta_interval_minutes)


def crl_generator(store: Store, keys: KeyBackend, clock: Clock, settings: Settings, *,
                  start_method: str = "spawn") -> Generator:
    """The CRL generator; only a holder of the CA keys (signer, operator commands) builds one."""
    publisher = Publisher(store, settings.data_dir, clock, settings.crl.versions_kept)
    return Generator(store, keys, clock, crl_policy(settings, start_method), publisher)
