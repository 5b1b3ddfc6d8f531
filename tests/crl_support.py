"""Helpers shared by the CRL tests: a data directory with issued and revoked certificates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from tests.helpers import copy_data_dir, issue_args, jpki, registry_rows


@dataclass(frozen=True)
class Issued:
    signature: str
    authentication: str
    signature_pem: Path
    authentication_pem: Path


def issue(data_dir: Path, out: Path, resident_id: str, **overrides: str) -> Issued:
    result = jpki(data_dir, *issue_args(resident_id, out, **overrides))
    assert result.code == 0, result.err
    body = result.json
    return Issued(body["signature"]["serial"], body["authentication"]["serial"],
                  Path(body["signature"]["certificate"]),
                  Path(body["authentication"]["certificate"]))


def copy_template(template_dir: Path, target: Path) -> Path:
    return copy_data_dir(template_dir, target)


def ca_pem(data_dir: Path, short: str, generation: int, out: Path) -> Path:
    """The CA certificate of a generation, written as PEM for openssl."""
    from cryptography.hazmat.primitives.serialization import Encoding

    kind = {"sign": "signature", "auth": "authentication"}[short]
    der = registry_rows(data_dir, "SELECT cert_der FROM ca_generations WHERE kind = ?"
                        " AND generation = ?", (kind, generation))[0][0]
    path = out / f"ca-{short}-g{generation}.pem"
    path.write_bytes(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))
    return path


def der_to_pem(crl_path: Path, out: Path) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding

    crl = x509.load_der_x509_crl(crl_path.read_bytes())
    path = out / (crl_path.parent.name + "-" + crl_path.parent.parent.name + "-"
                  + crl_path.stem + ".pem")
    path.write_bytes(crl.public_bytes(Encoding.PEM))
    return path
