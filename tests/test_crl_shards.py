"""Size-capped partitions: a municipality's certificates spread over CRL shards fixed at
issuance (registry/shards.py), each shard a CRL of its own that openssl scopes correctly;
the assignment stays put across runs and across a CA rotation."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from jpki.cli import main
from registry import shards
from tests.crl_support import ca_pem, der_to_pem
from tests.helpers import CONFIG, CliResult, issue_args, openssl, registry_rows

pytestmark = pytest.mark.engines

CAPACITY = 2


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The test settings with a cap that fits two worst-case entries per shard."""
    text = CONFIG.read_text(encoding="utf-8")
    small = shards.FRAME_BYTES + CAPACITY * shards.MAX_ENTRY_BYTES
    assert "max_partition_bytes = 10000000" in text
    path = tmp_path / "small.toml"
    path.write_text(text.replace("max_partition_bytes = 10000000",
                                 f"max_partition_bytes = {small}"), encoding="utf-8")
    assert shards.capacity(small) == CAPACITY
    return path


def cli(data_dir: Path, config: Path, *args: str) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, "--config", str(config), "--data-dir", str(data_dir)])
    return CliResult(code, out.getvalue(), err.getvalue())


def issue(data_dir: Path, config: Path, out: Path, resident: str) -> x509.Certificate:
    result = cli(data_dir, config, *issue_args(resident, out))
    assert result.code == 0, result.err
    return x509.load_pem_x509_certificate(
        Path(result.json["signature"]["certificate"]).read_bytes())


def cdp(certificate: x509.Certificate) -> tuple[str, x509.Name]:
    point = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0]
    names = point.full_name or []
    uri = next(n.value for n in names if isinstance(n, x509.UniformResourceIdentifier))
    directory = next(n.value for n in names if isinstance(n, x509.DirectoryName))
    return uri, directory


def partition_of(data_dir: Path, certificate: x509.Certificate) -> str:
    return str(registry_rows(data_dir, "SELECT partition FROM certificates WHERE serial = ?",
                             (format(certificate.serial_number, "x"),))[0][0])


def test_shards_fixed_at_issuance_scoped_by_openssl_and_stable(
        data_dir: Path, config: Path, tmp_path: Path) -> None:
    issued = [issue(data_dir, config, tmp_path / f"r{i}", f"shard-{i}") for i in range(5)]
    parts = [partition_of(data_dir, certificate) for certificate in issued]
    # Consecutive places, CAPACITY per shard; shard 0 keeps the bare code.
    first = int(parts[0].partition("-")[2] or 0)
    assert len(set(parts)) >= 2
    for certificate, partition in zip(issued, parts, strict=True):
        uri, directory = cdp(certificate)
        assert uri.endswith(f"/crl/sign/g1/{partition}.crl")
        assert shards.municipality_of(partition) == "13104"
    names = {cdp(c)[1] for c in issued}
    assert len(names) == len(set(parts))  # every shard has its own DirectoryName
    assert first >= 0

    victim, bystander = issued[0], next(c for c, p in zip(issued, parts, strict=True)
                                        if p != parts[0])
    assert cli(data_dir, config, "revoke", format(victim.serial_number, "x"), "--reason",
               "keyCompromise").code == 0
    assert cli(data_dir, config, "crl", "generate", "--kind", "sign").code == 0
    root = ca_pem(data_dir, "sign", 1, tmp_path)
    crl_dir = data_dir / "crl" / "sign" / "g1"
    for partition in set(parts):
        crl = x509.load_der_x509_crl((crl_dir / f"{partition}.crl").read_bytes())
        assert len(crl.public_bytes(Encoding.DER)) <= \
            shards.FRAME_BYTES + CAPACITY * shards.MAX_ENTRY_BYTES
    victim_crl = der_to_pem(crl_dir / f"{parts[0]}.crl", tmp_path)
    pem = tmp_path / "victim.pem"
    pem.write_bytes(victim.public_bytes(Encoding.PEM))
    result = openssl("verify", "-crl_check", "-CAfile", str(root), "-CRLfile", str(victim_crl),
                     str(pem))
    assert "certificate revoked" in result.stdout + result.stderr
    # Another shard's CRL is out of scope for the victim (the IDP names differ).
    other = der_to_pem(crl_dir / f"{partition_of(data_dir, bystander)}.crl", tmp_path)
    result = openssl("verify", "-crl_check", "-CAfile", str(root), "-CRLfile", str(other),
                     str(pem))
    assert result.returncode != 0
    assert "different CRL scope" in result.stdout + result.stderr

    # Another run changes nothing about the assignment (the publisher would refuse a changed
    # IDP at a URL anyway).
    assert cli(data_dir, config, "crl", "generate", "--kind", "sign").code == 0
    assert [partition_of(data_dir, c) for c in issued] == parts

    # A CA rotation: the old certificates keep their partition and their generation's CRLs;
    # the new generation numbers its own shards from its own counter.
    rotated = cli(data_dir, config, "ca", "rotate", "--kind", "signature", "--operator", "alice",
                  "--reason", "test rotation")
    assert rotated.code == 0, rotated.err
    newer = [issue(data_dir, config, tmp_path / f"n{i}", f"shard-new-{i}") for i in range(3)]
    assert [partition_of(data_dir, c) for c in issued] == parts
    assert [partition_of(data_dir, c) for c in newer] == ["13104", "13104", "13104-1"]
    assert all("/crl/sign/g2/" in cdp(c)[0] for c in newer)
    assert cli(data_dir, config, "crl", "generate", "--kind", "sign").code == 0
    for partition in set(parts):
        assert (crl_dir / f"{partition}.crl").exists()
    assert (data_dir / "crl" / "sign" / "g2" / "13104-1.crl").exists()


def test_capacity_arithmetic() -> None:
    assert shards.DEFAULT_CAPACITY == (10_000_000 - 4096) // 53 == 188_601
    assert shards.name("13104", 0) == "13104" and shards.name("13104", 3) == "13104-3"
    assert shards.municipality_of("13104-3") == "13104"
