"""What every command and the daemon build from the settings: store, key store, clock, issuer.

Built lazily so that `jpki --help` or a bad flag never opens the database.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from ca import auditkey, cardprofile
from ca.issuance import IssuancePolicy, PairIssuer
from ca.keyaccess import open_backend
from ca.keybackend import BackendSpec, Holder, KeyBackend, Role
from ca.phone import PhoneIssuer
from fees.tariff import Tariff, load_tariff
from jpki.settings import REPO_CONFIGS, Settings, load_settings
from registry import shards
from registry.clock import Clock, system_clock
from registry.errors import ConfigError, JPKIError
from registry.store import Store

log = logging.getLogger("jpki.audit")


def default_config() -> Path | None:
    """--config, else $JPKI_CONFIG, else the repository's configs/default.toml if present."""
    from_env = os.environ.get("JPKI_CONFIG")
    if from_env:
        return Path(from_env)
    candidate = REPO_CONFIGS / "default.toml"
    return candidate if candidate.exists() else None


@dataclass
class Context:
    settings: Settings
    clock: Clock = field(default=system_clock)
    # The security context of this process (ca/keybackend.py `Holder`): `jpki serve` runs as
    # "serve" and can never open a CA key; `jpki signer` and operator commands may.
    holder: Holder = "operator"

    @classmethod
    def load(cls, config: Path | None, data_dir: Path | None, clock: Clock = system_clock
             ) -> Context:
        return cls(load_settings(config if config else default_config(), data_dir), clock)

    def as_holder(self, holder: Holder) -> Context:
        """The same settings and clock in another security context (nothing opened is shared)."""
        return replace(self, holder=holder)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @cached_property
    def store(self) -> Store:
        return Store.open(self.data_dir, self.settings.registry.url)

    def key_spec(self, role: Role) -> BackendSpec:
        """The key backend of CA keys or of OCSP responder keys (each its own passphrase)."""
        keys = self.settings.keys
        if role == "ca":
            return BackendSpec(kind=keys.backend, data_dir=self.data_dir, role=role,
                               holder=self.holder,
                               passphrase_env=self.settings.ca.passphrase_env,
                               passphrase_file=self.settings.ca.passphrase_file,
                               pkcs11_module=keys.pkcs11_module, pkcs11_token=keys.pkcs11_token,
                               pkcs11_pin_env=keys.pkcs11_pin_env, scrypt_p=keys.scrypt_p)
        if (keys.responder_backend == "pkcs11" and keys.backend == "pkcs11"
                and keys.responder_pkcs11_token == keys.pkcs11_token):
            # PKCS#11 logs in per token: the responder's login would open the CA keys too.
            raise ConfigError("keys.responder_pkcs11_token: must not be the CA keys' token"
                              f" ({keys.pkcs11_token!r}); the serving daemon logs into it")
        return BackendSpec(kind=keys.responder_backend, data_dir=self.data_dir, role=role,
                           holder=self.holder,
                           passphrase_env=self.settings.ocsp.passphrase_env,
                           passphrase_file=self.settings.ocsp.passphrase_file,
                           pkcs11_module=keys.pkcs11_module,
                           pkcs11_token=keys.responder_pkcs11_token,
                           pkcs11_pin_env=keys.responder_pkcs11_pin_env,
                           scrypt_p=keys.scrypt_p)

    @cached_property
    def keys(self) -> KeyBackend:
        return open_backend(self.key_spec("ca"))

    @cached_property
    def responder_keys(self) -> KeyBackend:
        return open_backend(self.key_spec("ocsp"))

    def seal_audit(self) -> None:
        """After a command: sign an audit checkpoint if it appended rows and the CA key backend
        can be opened here; otherwise say so (the rows stay covered by the hash chain only)."""
        if "store" not in self.__dict__:
            return
        try:
            auditkey.seal(self.store, self.keys, self.clock)
        except JPKIError as exc:
            log.warning("audit log not checkpointed (%s); run `jpki audit checkpoint` where the"
                        " CA key backend can be opened", exc)

    @cached_property
    def tariff(self) -> Tariff:
        return load_tariff(self.settings.fees.tariff_file)

    @cached_property
    def phone_issuer(self) -> PhoneIssuer:
        return PhoneIssuer(self.store, self.keys, self.clock, self.issuer.policy)

    @cached_property
    def issuer(self) -> PairIssuer:
        policy = IssuancePolicy(
            base_url=self.settings.server.public_base_url,
            cps_uri=self.settings.ca.cps_uri,
            birthdays=self.settings.issuance.birthdays,
            minimum_signature_age=self.settings.issuance.minimum_signature_age,
            key_size=self.settings.ca.key_size,
            profile=cardprofile.profile(self.settings.issuance.profile),
            pkcs12_kdf_rounds=self.settings.issuance.pkcs12_kdf_rounds,
            shard_capacity=shards.capacity(self.settings.crl.max_partition_bytes),
        )
        return PairIssuer(self.store, self.keys, self.clock, policy)
