"""Numbering, nextUpdate policy, look-back, atomic publication and the daily schedule, with a
frozen clock (registry.clock.FrozenClock) and the real registry, keys and files."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca import authority
from ca.kinds import CertKind
from crl import builder
from crl.generator import Generator
from crl.publisher import FULL
from crl.schedule import DailyRunner, DailySchedule
from demo import populate as demo_populate
from jpki.context import Context
from jpki.settings import load_settings
from jpki.wiring import crl_generator
from registry import certificates, municipalities
from registry.clock import JST, FrozenClock, epoch, from_epoch
from registry.errors import Conflict
from registry.reasons import Reason
from tests.helpers import CONFIG

pytestmark = pytest.mark.engines

CODE = "13104"


def jst(day: datetime, hh: int, mm: int) -> datetime:
    return datetime.combine(day.astimezone(JST).date(), time(hh, mm), JST)


@pytest.fixture
def clock(data_dir: Path) -> FrozenClock:
    # 02:00 JST on the day after the template's CAs were created (system time).
    return FrozenClock(jst(datetime.now(UTC) + timedelta(days=1), 2, 0))


@pytest.fixture
def ctx(data_dir: Path, clock: FrozenClock) -> Context:
    context = Context(load_settings(CONFIG, data_dir), clock)
    yield context
    context.store.close()


@pytest.fixture
def generator(ctx: Context) -> Generator:
    return crl_generator(ctx.store, ctx.keys, ctx.clock, ctx.settings)


def load(generator: Generator, kind: CertKind, partition: str) -> x509.CertificateRevocationList:
    ca = authority.current(generator.store, kind)
    return x509.load_der_x509_crl(generator.publisher.path(ca, partition).read_bytes())


def idp_of(generator: Generator, code: str) -> x509.IssuingDistributionPoint:
    ca = authority.current(generator.store, CertKind.SIGNATURE)
    return builder.partition_idp(ca.kind, ca.generation,
                                 municipalities.get(generator.store, code),
                                 generator.policy.base_url)


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_next_update_is_this_update_plus_a_day_and_grace(generator: Generator,
                                                         clock: FrozenClock) -> None:
    generator.run(kind=CertKind.SIGNATURE)
    crl = load(generator, CertKind.SIGNATURE, CODE)
    assert crl.last_update_utc == clock().replace(microsecond=0)
    grace = generator.policy.grace_hours
    assert crl.next_update_utc - crl.last_update_utc == timedelta(hours=24 + grace)


def test_next_update_never_passes_the_ca_not_after(generator: Generator,
                                                   clock: FrozenClock) -> None:
    ca = authority.current(generator.store, CertKind.SIGNATURE)
    clock.now = ca.not_after - timedelta(hours=3)
    generator.run(kind=CertKind.SIGNATURE, partition=CODE)
    crl = load(generator, CertKind.SIGNATURE, CODE)
    assert crl.next_update_utc == ca.not_after
    assert builder.next_update(clock(), 6, ca.not_after) == ca.not_after


def test_numbers_increase_per_scope_and_unchanged_partitions_are_resigned(
        generator: Generator, clock: FrozenClock) -> None:
    generator.run()
    first = load(generator, CertKind.SIGNATURE, CODE)
    clock.advance(timedelta(days=1))
    generator.run()
    second = load(generator, CertKind.SIGNATURE, CODE)
    assert number(second) == number(first) + 1
    assert second.next_update_utc == first.next_update_utc + timedelta(days=1)
    # An urgent run for one partition moves only that partition and the full CRLs.
    generator.run(partition=CODE)
    assert number(load(generator, CertKind.SIGNATURE, CODE)) == number(second) + 1
    assert number(load(generator, CertKind.SIGNATURE, FULL)) == 3
    assert number(load(generator, CertKind.SIGNATURE, "01100")) == 2


def test_publisher_refuses_a_number_that_does_not_go_up(generator: Generator,
                                                        clock: FrozenClock) -> None:
    generator.run(kind=CertKind.SIGNATURE, partition=CODE)
    ca = authority.current(generator.store, CertKind.SIGNATURE)
    served = generator.publisher.path(ca, CODE).read_bytes()
    published = number(x509.load_der_x509_crl(served))
    key = ca.private_key(generator.keys)
    idp = idp_of(generator, CODE)
    for stale in (published, published - 1):
        crl = builder.build(ca, key, number=stale, this_update=clock(),
                            next_update=clock() + timedelta(days=1), revoked=[], idp=idp)
        with pytest.raises(Conflict, match="must increase"):
            generator.publisher.publish(ca, CODE, crl.public_bytes(Encoding.DER), 0)
    # A changed IssuingDistributionPoint (another base URL) is refused too.
    moved = builder.partition_idp(ca.kind, ca.generation,
                                  municipalities.get(generator.store, CODE),
                                  "http://elsewhere.example")
    crl = builder.build(ca, key, number=published + 5, this_update=clock(),
                        next_update=clock() + timedelta(days=1), revoked=[], idp=moved)
    with pytest.raises(Conflict, match="IssuingDistributionPoint"):
        generator.publisher.publish(ca, CODE, crl.public_bytes(Encoding.DER), 0)
    assert generator.publisher.path(ca, CODE).read_bytes() == served


def test_crash_between_write_and_rename_leaves_the_old_crl_served(
        generator: Generator, clock: FrozenClock) -> None:
    generator.run(kind=CertKind.SIGNATURE, partition=CODE)
    ca = authority.current(generator.store, CertKind.SIGNATURE)
    path = generator.publisher.path(ca, CODE)
    served = path.read_bytes()
    clock.advance(timedelta(hours=1))
    # The first half of a publication: number reserved, CRL signed, written and fsynced...
    reserved = generator.publisher.reserve(ca, CODE)
    crl = builder.build(ca, ca.private_key(generator.keys), number=reserved,
                        this_update=clock(), next_update=clock() + timedelta(days=1),
                        revoked=[], idp=idp_of(generator, CODE))
    staged = generator.publisher.stage(ca, CODE, crl.public_bytes(Encoding.DER), 0)
    assert staged.temporary.exists()
    # ...then the process dies before commit(): the rename never happens.
    assert path.read_bytes() == served
    state = generator.publisher.state(ca.id, CODE)
    assert state is not None and state["published_number"] == number(
        x509.load_der_x509_crl(served))
    # The next run cleans the leftover and publishes a number above the reserved one.
    generator.run(kind=CertKind.SIGNATURE, partition=CODE)
    assert not staged.temporary.exists()
    assert number(load(generator, CertKind.SIGNATURE, CODE)) == reserved + 1


def test_keeps_the_last_n_versions(generator: Generator, clock: FrozenClock) -> None:
    kept = generator.publisher.versions_kept
    for _ in range(kept + 2):
        generator.run(kind=CertKind.SIGNATURE, partition=CODE)
        clock.advance(timedelta(minutes=1))
    ca = authority.current(generator.store, CertKind.SIGNATURE)
    history = generator.publisher.path(ca, CODE).parent / "history"
    versions = sorted(int(p.name.rsplit(".", 1)[1]) for p in history.glob(f"{CODE}.crl.*"))
    assert versions == list(range(3, kept + 3))


def test_expired_certificates_drop_off_after_the_look_back(ctx: Context, generator: Generator,
                                                           clock: FrozenClock) -> None:
    demo_populate.populate(ctx.store, clock, residents=5, revoked_fraction=1.0,
                           kinds=[CertKind.SIGNATURE])
    rows = ctx.store.query("SELECT serial, not_after FROM certificates WHERE status='revoked'")
    assert len(rows) == 5
    latest = max(row["not_after"] for row in rows)
    last_serial = int(next(r["serial"] for r in rows if r["not_after"] == latest), 16)
    lookback = timedelta(days=generator.policy.lookback_days)
    clock.now = from_epoch(latest) + lookback - timedelta(hours=1)
    generator.run(kind=CertKind.SIGNATURE)
    full = load(generator, CertKind.SIGNATURE, FULL)
    assert full.get_revoked_certificate_by_serial_number(last_serial) is not None
    clock.now = from_epoch(latest) + lookback + timedelta(seconds=1)
    ca = authority.current(generator.store, CertKind.SIGNATURE)
    if clock.now >= ca.not_after:
        pytest.skip("synthetic validity reaches the CA's end")
    generator.run(kind=CertKind.SIGNATURE)
    assert len(load(generator, CertKind.SIGNATURE, FULL)) == 0


def test_daily_run_happens_once_a_day_at_the_configured_jst_time(
        generator: Generator, clock: FrozenClock) -> None:
    schedule = DailySchedule("03:00")
    runs: list[datetime] = []

    def job() -> None:
        runs.append(clock())
        generator.run()

    runner = DailyRunner(schedule, clock, job, generator.last_complete_run)
    assert runner.tick()  # nothing published yet: catch up at once (02:00 JST)
    assert not runner.tick()
    clock.now = jst(clock(), 2, 59)
    assert not runner.tick()
    assert runner.seconds_until_next() == 60
    clock.now = jst(clock(), 3, 0)
    assert runner.tick()
    assert not runner.tick()
    clock.advance(timedelta(hours=23, minutes=59))
    assert not runner.tick()
    clock.advance(timedelta(minutes=1))
    assert runner.tick()
    assert [run.astimezone(JST).strftime("%H:%M") for run in runs] == ["02:00", "03:00",
                                                                        "03:00"]
    # Every partition was re-signed by the last run, changed or not.
    crl = load(generator, CertKind.AUTHENTICATION, "47201")
    assert number(crl) == 3 and crl.last_update_utc == runs[-1]
    # An urgent one-partition run does not count as the daily run.
    clock.advance(timedelta(days=1))
    generator.run(partition=CODE)
    assert runner.tick()
    assert epoch(runs[-1]) == generator.last_complete_run(clock())


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_worker_pool_publishes_the_same_crls(ctx: Context, clock: FrozenClock,
                                             start_method: str) -> None:
    """The pool path (spawned in the daemon, forked by the CLI) gives what the in-process
    path gives: same entries per partition, full CRL = union of the partitions."""
    demo_populate.populate(ctx.store, clock, residents=400, revoked_fraction=0.5,
                           kinds=[CertKind.SIGNATURE])
    serial = crl_generator(ctx.store, ctx.keys, clock, ctx.settings)
    inline = {(p.kind, p.partition): p.entries for p in serial.run(kind=CertKind.SIGNATURE)}
    pooled_generator = crl_generator(ctx.store, ctx.keys, clock, ctx.settings,
                                     start_method=start_method)
    pooled_generator.policy = replace(pooled_generator.policy, workers=2, parallel_threshold=0)
    clock.advance(timedelta(minutes=1))
    pooled = pooled_generator.run(kind=CertKind.SIGNATURE)
    assert {(p.kind, p.partition): p.entries for p in pooled} == inline
    full = load(pooled_generator, CertKind.SIGNATURE, FULL)
    revoked = {row["serial"] for row in ctx.store.query(
        "SELECT serial FROM certificates WHERE status = 'revoked' AND kind = 'signature'")}
    assert {format(entry.serial_number, "x") for entry in full} == revoked
    assert number(full) == 2
    ca = authority.current(ctx.store, CertKind.SIGNATURE)
    assert full.is_signature_valid(ca.certificate.public_key())


def test_entries_are_encoded_once_and_new_revocations_join_the_cache(
        ctx: Context, generator: Generator, clock: FrozenClock) -> None:
    demo_populate.populate(ctx.store, clock, residents=50, revoked_fraction=0.5,
                           kinds=[CertKind.SIGNATURE])
    generator.run(kind=CertKind.SIGNATURE)
    cold = {(e.serial_number, e.revocation_date_utc, tuple(e.extensions))
            for e in load(generator, CertKind.SIGNATURE, FULL)}
    cached = ctx.store.conn.execute("SELECT COUNT(*) FROM crl_entries").fetchone()[0]
    assert cached == len(cold) > 0
    # A revocation after the first run is encoded by the next one and joins the cache.
    good = ctx.store.one("SELECT serial FROM certificates WHERE status = 'good' LIMIT 1")
    assert good is not None
    certificates.revoke(ctx.store, clock, good["serial"], Reason.keyCompromise, actor="test")
    clock.advance(timedelta(hours=1))
    generator.run(kind=CertKind.SIGNATURE)
    warm = {(e.serial_number, e.revocation_date_utc, tuple(e.extensions))
            for e in load(generator, CertKind.SIGNATURE, FULL)}
    assert len(warm) == len(cold) + 1 and cold < warm
    assert ctx.store.conn.execute("SELECT COUNT(*) FROM crl_entries").fetchone()[0] == cached + 1
    # The cached encodings are exactly what a cold run produces.
    ctx.store.conn.execute("DELETE FROM crl_entries")
    clock.advance(timedelta(hours=1))
    generator.run(kind=CertKind.SIGNATURE)
    assert {(e.serial_number, e.revocation_date_utc, tuple(e.extensions))
            for e in load(generator, CertKind.SIGNATURE, FULL)} == warm
    # Entries past the look-back leave the cache too.
    clock.now = from_epoch(max(row["not_after"] for row in ctx.store.query(
        "SELECT not_after FROM certificates"))) + timedelta(days=generator.policy.lookback_days,
                                                             seconds=1)
    ca = authority.current(ctx.store, CertKind.SIGNATURE)
    if clock.now < ca.not_after:
        generator.run(kind=CertKind.SIGNATURE)
        assert ctx.store.conn.execute("SELECT COUNT(*) FROM crl_entries").fetchone()[0] == 0


def test_partition_missing_from_the_table_is_listed_in_the_full_crl_only(
        ctx: Context, generator: Generator, clock: FrozenClock) -> None:
    demo_populate.populate(ctx.store, clock, residents=20, revoked_fraction=1.0,
                           kinds=[CertKind.SIGNATURE])
    ctx.store.conn.execute("UPDATE certificates SET partition = '99999'"
                           " WHERE rowid = (SELECT MIN(rowid) FROM certificates)")
    orphan = ctx.store.one("SELECT serial FROM certificates WHERE partition = '99999'")
    assert orphan is not None
    published = generator.run()
    assert "99999" not in {p.partition for p in published}
    full = load(generator, CertKind.SIGNATURE, FULL)
    assert full.get_revoked_certificate_by_serial_number(int(orphan["serial"], 16)) is not None
    assert len(full) == 20
    assert generator.last_complete_run(clock()) == epoch(clock().replace(microsecond=0))
