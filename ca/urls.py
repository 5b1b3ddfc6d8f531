"""The URLs written into certificates; the HTTP surfaces serve exactly these paths."""

from __future__ import annotations

from ca.kinds import CertKind


def crl_partition_path(kind: CertKind, generation: int, partition: str) -> str:
    return f"/crl/{kind.short}/g{generation}/{partition}.crl"


def crl_full_path(kind: CertKind, generation: int) -> str:
    return f"/crl/{kind.short}/g{generation}/full.crl"


DELTA_SUFFIX = ".delta"


def crl_delta_path(kind: CertKind, generation: int, scope: str) -> str:
    """The delta CRL (RFC 5280 §5.2.4) of a partition or of the full CRL ("full"), named in
    its base's freshestCRL (§5.2.6)."""
    return f"/crl/{kind.short}/g{generation}/{scope}{DELTA_SUFFIX}.crl"


def ca_cert_path(kind: CertKind, generation: int) -> str:
    return f"/ca/{kind.short}/g{generation}.der"


OCSP_PATH = "/ocsp"


def link_cert_path(kind: CertKind, old: int, new: int, direction: str) -> str:
    """A link certificate (RFC 4210 §4.4) between generations `old` and `new`.

    Named by generations and direction, not by serial: a link reuses its subject's serial.
    """
    return f"/ca/{kind.short}/g{old}-g{new}-{direction.replace('_', '-')}.der"
