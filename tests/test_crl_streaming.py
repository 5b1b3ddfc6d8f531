"""Streamed CRL assembly (crl.assembly.write_streamed) against the in-memory assembly: the same
inputs give the same bytes, and a whole run reads its entries back in batches."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca import authority
from ca.kinds import CertKind
from crl import assembly, builder, entries
from crl.entries import RevokedEntry
from crl.generator import Generator
from crl.publisher import FULL
from demo import populate as demo_populate
from jpki.context import Context
from jpki.settings import load_settings
from jpki.wiring import crl_generator
from registry import crl_entries, municipalities
from registry.clock import FrozenClock
from tests.helpers import CONFIG


@pytest.fixture
def ctx(data_dir: Path) -> Context:
    context = Context(load_settings(CONFIG, data_dir),
                      FrozenClock(datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)))
    yield context
    context.store.close()


def _entries(count: int) -> list[RevokedEntry]:
    moment = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    return [RevokedEntry(format(0x8000_0000_0000_0000 + index * 7919, "x"), moment + 86400 * 900,
                  moment + index, [None, 1, 3, 5, 6][index % 5]) for index in range(count)]


@pytest.mark.parametrize("count", [0, 1, 3, 1000])
@pytest.mark.parametrize("scope", ["partition", "full", "delta"])
def test_streamed_bytes_equal_the_in_memory_assembly(ctx: Context, count: int,
                                                     scope: str) -> None:
    ca = authority.current(ctx.store, CertKind.SIGNATURE)
    key = ca.private_key(ctx.keys)
    encoded = builder.EntryEncoder().encode(_entries(count))
    now = ctx.clock().replace(microsecond=0)
    later = now + timedelta(hours=30)
    idp = None if scope == "full" else builder.partition_idp(
        ca.kind, ca.generation, municipalities.get(ctx.store, "13104"), "http://x.test")
    delta = assembly.Delta(7) if scope == "delta" else None
    freshest = None if scope == "delta" else "http://x.test/crl/sign/g1/full.delta.crl"
    expected = assembly.signed_crl(ca, key, number=9, this_update=now, next_update=later,
                                   contents=encoded, idp=idp, freshest_url=freshest,
                                   delta=delta)
    frame = assembly.CRLFrame.make(ca, number=9, this_update=now, next_update=later, idp=idp,
                                   freshest_url=freshest, delta=delta)
    out = io.BytesIO()
    # Uneven chunks, as the registry's batches would come.
    chunks = [b"".join(encoded[i:i + 333]) for i in range(0, len(encoded), 333)]
    streamed = assembly.write_streamed(out, frame, key, sum(map(len, encoded)), iter(chunks))
    assert out.getvalue() == expected
    assert streamed.size == len(expected)
    crl = x509.load_der_x509_crl(out.getvalue())
    assert crl.is_signature_valid(ca.certificate.public_key())
    assert len(crl) == count


def test_streaming_refuses_entries_that_changed_length(ctx: Context) -> None:
    ca = authority.current(ctx.store, CertKind.SIGNATURE)
    now = ctx.clock()
    frame = assembly.CRLFrame.make(ca, number=1, this_update=now,
                                   next_update=now + timedelta(hours=1))
    with pytest.raises(RuntimeError, match="changed while streamed"):
        assembly.write_streamed(io.BytesIO(), frame, ca.private_key(ctx.keys), 10,
                                iter([b"\x30\x03\x02\x01\x01"]))


def test_a_run_streams_the_cached_entries_in_batches(ctx: Context,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Many batches per CRL (a small batch size): the files list every revoked certificate
    and equal, entry for entry, what the registry holds."""
    monkeypatch.setattr(crl_entries, "BATCH", 7)  # the registry streams the cache
    demo_populate.populate(ctx.store, ctx.clock, residents=400, revoked_fraction=0.5,
                           kinds=[CertKind.SIGNATURE])
    generator: Generator = crl_generator(ctx.store, ctx.keys, ctx.clock, ctx.settings)
    generator.run(kind=CertKind.SIGNATURE)
    generator.run(kind=CertKind.SIGNATURE)  # the daily run: every entry from the cache
    ca = authority.current(ctx.store, CertKind.SIGNATURE)
    full = x509.load_der_x509_crl(generator.publisher.path(ca, FULL).read_bytes())
    revoked = {int(row[0], 16) for row in ctx.store.conn.execute(
        "SELECT serial FROM certificates WHERE ca_id = ? AND status = 'revoked'", (ca.id,))}
    assert {entry.serial_number for entry in full} == revoked
    assert full.is_signature_valid(ca.certificate.public_key())
    listed = 0
    for code in entries.partitions(ctx.store, ca.id):
        part = x509.load_der_x509_crl(generator.publisher.path(ca, code).read_bytes())
        assert part.is_signature_valid(ca.certificate.public_key())
        listed += len(part)
    assert listed == len(revoked)
    assert full.public_bytes(Encoding.DER) == generator.publisher.path(ca, FULL).read_bytes()


def test_each_cached_encoding_is_its_own_entry() -> None:
    """The batch encoder splits one scratch CRL into entries and checks pyca's order only at
    the ends and the middle: every encoding must still be the one its entry gets alone."""
    batch = _entries(61)
    encoder = builder.EntryEncoder()
    together = encoder.encode(batch)
    assert together == [encoder.encode([entry])[0] for entry in batch]
