"""Linkage answers with consent and validity-check preconditions, and the fees they meter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ca import authority
from ca.issuance import IssuedPair, IssueRequest
from ca.kinds import CertKind
from fees.invoice import invoices
from registry import consents, verifiers
from registry.clock import JST
from registry.facts import Facts
from revocation.events import EventApplier
from tests.helpers import jpki
from tests.stack import Stack, frozen_context, running

pytestmark = pytest.mark.engines

SHINJUKU = dict(name="山田 太郎", dob="1990-12-31", sex="male",
                address="東京都新宿区西新宿二丁目8番1号", municipality_code="13104")
MOVE = dict(SHINJUKU, address="東京都千代田区千代田1番1号", municipality_code="13101")
START = datetime(2025, 12, 31, 23, 50, tzinfo=JST)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    context, clock = frozen_context(tmp_path / "data", START)
    async with running(context, clock) as item:
        yield item
    context.store.close()


def issue(stack: Stack, tmp_path: Path, resident_id: str, facts: dict = SHINJUKU,
          renew: bool = False) -> IssuedPair:
    request = IssueRequest(resident_id, Facts.parse(**facts), tmp_path / f"{resident_id}-"
                           f"{stack.clock().timestamp()}", "abc12345", "1234")
    issuer = stack.context.issuer
    return issuer.renew(request) if renew else issuer.issue(request)


def verifier(stack: Stack, name: str) -> tuple[verifiers.Verifier, str]:
    who, token = verifiers.add(stack.context.store, stack.clock, name)
    TOKENS[who.id] = token
    return who, token


TOKENS: dict[int, str] = {}


def ca_pem(stack: Stack, kind: CertKind) -> Path:
    path = stack.context.data_dir / f"{kind.short}-ca.pem"
    if not path.exists():
        ca = authority.current(stack.context.store, kind).certificate
        path.write_bytes(ca.public_bytes(Encoding.PEM))
    return path


async def validity_check(stack: Stack, who: verifiers.Verifier, serial: str, kind: CertKind,
                         status_confirmation: bool = False) -> None:
    """A real validity check: `openssl ocsp` with the verifier's token; the responder meters it."""
    extra = ("-header", "JPKI-Check-Purpose=status-confirmation") if status_confirmation else ()
    text = await stack.ocsp(ca_pem(stack, kind), serial, TOKENS[who.id], *extra)
    assert f"0x{serial}: " in text


def grant(stack: Stack, resident_id: str, who: verifiers.Verifier, service: str,
          items: tuple[str, ...] = ()) -> None:
    consents.grant(stack.context.store, stack.clock, resident_id, who, service, items)


async def test_renewal_predecessor_and_successor(stack: Stack, tmp_path: Path) -> None:
    bank, token = verifier(stack, "bank")
    first = issue(stack, tmp_path, "r1")
    stack.advance(timedelta(days=30))
    second = issue(stack, tmp_path, "r1", renew=True)
    stack.advance(timedelta(days=30))
    third = issue(stack, tmp_path, "r1", renew=True)
    grant(stack, "r1", bank, "linkage")
    a, b, c = (pair.issued[CertKind.AUTHENTICATION].serial for pair in (first, second, third))
    await validity_check(stack, bank, c, CertKind.AUTHENTICATION)
    status, body = await stack.get(f"/linkage/v1/predecessor/{c}", token)
    assert status == 200 and body["predecessor"] == b
    status, body = await stack.get(f"/linkage/v1/predecessor/{c}?chain=all", token)
    assert body["chain"] == [b, a]
    await validity_check(stack, bank, a, CertKind.AUTHENTICATION)
    status, body = await stack.get(f"/linkage/v1/successor/{a}", token)
    assert status == 200 and body["successor"] == c
    # the signature chain is linked the same way
    s1, s3 = (p.issued[CertKind.SIGNATURE].serial for p in (first, third))
    await validity_check(stack, bank, s1, CertKind.SIGNATURE)
    assert (await stack.get(f"/linkage/v1/successor/{s1}", token))[1]["successor"] == s3


async def test_refusals(stack: Stack, tmp_path: Path) -> None:
    bank, token = verifier(stack, "bank")
    other, other_token = verifier(stack, "broker")
    pair = issue(stack, tmp_path, "r1")
    serial = pair.issued[CertKind.AUTHENTICATION].serial
    assert (await stack.get(f"/linkage/v1/predecessor/{serial}"))[0] == 401
    assert (await stack.get(f"/linkage/v1/predecessor/{serial}", "vf_nope"))[0] == 401
    status, body = await stack.get("/linkage/v1/predecessor/zz-top", token)
    assert status == 400 and body["field"] == "serial"
    status, body = await stack.get("/linkage/v1/predecessor/abcdef0123", token)
    assert status == 404
    # no consent: 403 naming the missing consent, and nothing about the resident
    status, body = await stack.get(f"/linkage/v1/predecessor/{serial}", token)
    assert status == 403 and "'linkage' consent" in body["detail"]
    assert "r1" not in body["detail"] and "山田" not in str(body)
    assert body["type"] == "about:blank" and body["status"] == 403
    grant(stack, "r1", bank, "linkage")
    # consent, but no validity check within the window: 409
    status, body = await stack.get(f"/linkage/v1/predecessor/{serial}", token)
    assert status == 409 and "validity" in body["detail"]
    await validity_check(stack, bank, serial, CertKind.AUTHENTICATION)
    assert (await stack.get(f"/linkage/v1/predecessor/{serial}", token))[0] == 200
    stack.advance(timedelta(minutes=11))
    assert (await stack.get(f"/linkage/v1/predecessor/{serial}", token))[0] == 409
    # another verifier's check and consent do not count
    await validity_check(stack, other, serial, CertKind.AUTHENTICATION)
    assert (await stack.get(f"/linkage/v1/predecessor/{serial}", other_token))[0] == 403
    # withdrawal takes effect at once
    await validity_check(stack, bank, serial, CertKind.AUTHENTICATION)
    consents.withdraw(stack.context.store, stack.clock, "r1", bank, "linkage")
    assert (await stack.get(f"/linkage/v1/predecessor/{serial}", token))[0] == 403
    # a grant lasts 10 years (the counterpart number needs no prior validity check)
    grant(stack, "r1", bank, "linkage")
    stack.clock.advance(timedelta(days=3651))
    assert (await stack.get(f"/linkage/v1/counterpart/{serial}", token))[0] == 200
    stack.clock.advance(timedelta(days=2))
    assert (await stack.get(f"/linkage/v1/counterpart/{serial}", token))[0] == 403


async def test_counterpart_latest_facts_and_age(stack: Stack, tmp_path: Path) -> None:
    bank, token = verifier(stack, "bank")
    pair = issue(stack, tmp_path, "r1")
    sig = pair.issued[CertKind.SIGNATURE].serial
    auth = pair.issued[CertKind.AUTHENTICATION].serial
    grant(stack, "r1", bank, "linkage")
    status, body = await stack.get(f"/linkage/v1/counterpart/{sig}", token)
    assert status == 200 and body["counterpart"] == {"serial": auth, "kind": "authentication"}
    status, body = await stack.get(f"/linkage/v1/counterpart/{auth}", token)
    assert body["counterpart"]["serial"] == sig
    # latest facts: consent per item, registered serial, nothing until a newer certificate
    grant(stack, "r1", bank, "latest-facts", ("address", "name"))
    assert (await stack.get(f"/linkage/v1/latest-facts/{sig}", token))[0] == 409
    await validity_check(stack, bank, sig, CertKind.SIGNATURE)
    status, body = await stack.get(f"/linkage/v1/latest-facts/{sig}", token)
    assert status == 200 and body["newer"] is None
    EventApplier(stack.context.store, stack.clock).apply(
        {"event_id": "move-1", "resident_id": "r1", "type": "change",
         "occurred_at": "2025-12-31T10:00:00+09:00", **MOVE})
    status, body = await stack.get(f"/linkage/v1/latest-facts/{sig}", token)
    assert body["newer"] is None  # revoked, but no newer signature certificate yet
    renewed = issue(stack, tmp_path, "r1", facts=MOVE, renew=True)
    status, body = await stack.get(f"/linkage/v1/latest-facts/{sig}", token)
    assert status == 200
    assert body["newer"] == {"serial": renewed.issued[CertKind.SIGNATURE].serial,
                             "facts": {"address": "東京都千代田区千代田1番1号",
                                       "name": "山田\u3000太郎"}}
    assert "dob" not in body["newer"]["facts"]
    # age: true/false only, never the date of birth
    grant(stack, "r1", bank, "age")
    new_auth = renewed.issued[CertKind.AUTHENTICATION].serial
    await validity_check(stack, bank, new_auth, CertKind.AUTHENTICATION)
    status, body = await stack.get(f"/linkage/v1/age/{new_auth}?at_least=65", token)
    assert status == 200 and body["result"] is False  # 35 since 2025-12-31 (born 1990-12-31)
    stack.set(datetime(2026, 12, 31, 0, 5, tzinfo=JST))
    await validity_check(stack, bank, new_auth, CertKind.AUTHENTICATION)
    status, body = await stack.get(f"/linkage/v1/age/{new_auth}?at_least=20", token)
    # Exactly these three keys: no date of birth (a hex serial may itself contain "1990").
    assert body == {"serial": new_auth, "at_least": 20, "result": True}
    assert "1990-12-31" not in str(body)
    assert (await stack.get(f"/linkage/v1/age/{new_auth}?at_least=x", token))[0] == 400


async def test_age_answers_only_the_configured_thresholds(stack: Stack, tmp_path: Path) -> None:
    """Issue 14, defect 9: a free threshold lets a verifier bisect the date of birth."""
    bank, token = verifier(stack, "bank")
    pair = issue(stack, tmp_path, "r1")
    auth = pair.issued[CertKind.AUTHENTICATION].serial
    grant(stack, "r1", bank, "age")
    await validity_check(stack, bank, auth, CertKind.AUTHENTICATION)
    for allowed in (15, 18, 20, 65):
        status, body = await stack.get(f"/linkage/v1/age/{auth}?at_least={allowed}", token)
        assert status == 200 and body["result"] is (allowed <= 35), body
    for refused in ("35", "36", "0", "19", "150", "-18", "18.0", "+18", " 18",
                    "9" * 5000, ""):
        status, body = await stack.get(f"/linkage/v1/age/{auth}?at_least={refused}", token)
        assert status == 400, (refused[:20], status)
        assert body["field"] == "at_least"
        assert "15, 18, 20, 65" in body["detail"]


async def test_invoice_across_the_promotion_boundary(stack: Stack, tmp_path: Path) -> None:
    bank, token = verifier(stack, "bank")
    pair = issue(stack, tmp_path, "r1")
    sig = pair.issued[CertKind.SIGNATURE].serial
    auth = pair.issued[CertKind.AUTHENTICATION].serial
    grant(stack, "r1", bank, "linkage")
    # 2025-12-31 23:50 JST: OCSP is still free
    await validity_check(stack, bank, sig, CertKind.SIGNATURE)
    await validity_check(stack, bank, auth, CertKind.AUTHENTICATION)
    assert (await stack.get(f"/linkage/v1/counterpart/{sig}", token))[0] == 200
    # 2026-01-01 00:00 JST: the promotion has ended
    stack.set(datetime(2026, 1, 1, 0, 0, tzinfo=JST))
    for _ in range(3):
        await validity_check(stack, bank, sig, CertKind.SIGNATURE)
    await validity_check(stack, bank, auth, CertKind.AUTHENTICATION)
    assert (await stack.get(f"/linkage/v1/predecessor/{auth}", token))[0] == 200
    # status confirmations: the first of the year is charged, repeats are not
    for _ in range(2):
        await validity_check(stack, bank, sig, CertKind.SIGNATURE, status_confirmation=True)
    december = {i.verifier: i for i in invoices(stack.context.store, stack.context.tariff,
                                                 "2025-12")}["bank"]
    assert december.subtotal_yen == 2  # counterpart only: the checks were free
    assert {(x.check_type, x.rule_id, x.count, x.amount_yen) for x in december.lines} == {
        ("signature_check", "ocsp-promotion-signature", 1, 0),
        ("authentication_check", "ocsp-promotion-authentication", 1, 0),
        ("counterpart", "counterpart-number", 1, 2)}
    january = invoices(stack.context.store, stack.context.tariff, "2026-01", "bank")[0]
    assert {(x.check_type, x.rule_id, x.count, x.amount_yen) for x in january.lines} == {
        ("signature_check", "signature-check", 4, 80),
        ("signature_check", "status-confirmation-repeat", 1, 0),
        ("authentication_check", "authentication-check", 1, 2),
        ("linkage", "serial-linkage", 1, 0)}
    assert january.total_yen == 82 and january.discount_yen == 0
    # the CLI prints the same invoice, as JSON and CSV
    cli = jpki(stack.context.data_dir, "fees", "invoice", "--month", "2026-01")
    assert cli.code == 0 and cli.json["invoices"][0]["total_yen"] == 82
    csv = jpki(stack.context.data_dir, "fees", "invoice", "--month", "2026-01", "--format",
               "csv")
    assert "bank,2026-01,total,,,82" in csv.out
    assert jpki(stack.context.data_dir, "fees", "invoice", "--month", "2026-13").code == 2
    usage = jpki(stack.context.data_dir, "fees", "usage", "--verifier", "bank")
    assert sum(row["yen"] for row in usage.json["usage"]) == 84


def test_discount_tiers_and_rounding(tmp_path: Path) -> None:
    from fees.tariff import Tariff, TariffFile, discounted

    spec = TariffFile(rule=[{"id": "x", "check": "signature_check", "valid_from": "2016-01-01",
                             "yen": 20}],
                      discounts={"default": {"tiers": [{"from_checks": 10, "percent": 5}]},
                                 "verifiers": {"city": {"tiers": [{"from_checks": 0,
                                                                    "percent": 33}]}}})
    tariff = Tariff(spec)
    assert tariff.discount_percent("bank", 9) == 0
    assert tariff.discount_percent("bank", 10) == 5
    assert tariff.discount_percent("city", 1) == 33
    assert discounted(20 * 7, 33) == 93  # 93.8 rounded down
    assert discounted(0, 33) == 0


def test_overlapping_rules_are_refused(tmp_path: Path) -> None:
    from fees.tariff import load_tariff
    from registry.errors import ConfigError

    path = tmp_path / "t.toml"
    path.write_text('[[rule]]\nid="a"\ncheck="age"\nvalid_from=2020-01-01\nyen=0\n'
                    '[[rule]]\nid="b"\ncheck="age"\nvalid_from=2021-01-01\nyen=1\n')
    with pytest.raises(ConfigError, match="overlap"):
        load_tariff(path)
    path.write_text('[[rule]]\nid="a"\ncheck="age"\nvalid_from=2020-01-01\nyen=-1\n')
    with pytest.raises(ConfigError, match="rule.0.yen"):
        load_tariff(path)


def test_consent_cli(data_dir: Path, tmp_path: Path) -> None:
    from tests.helpers import issue_args

    assert jpki(data_dir, *issue_args("r1", tmp_path / "o")).code == 0
    assert jpki(data_dir, "verifier", "add", "bank").code == 0
    base = ["consent", "grant", "--resident-id", "r1", "--verifier", "bank"]
    granted = jpki(data_dir, *base, "--service", "latest-facts", "--items", "name,address")
    assert granted.code == 0 and granted.json["items"] == ["name", "address"]
    assert jpki(data_dir, *base, "--service", "latest-facts").code == 2  # items required
    bad = jpki(data_dir, *base, "--service", "latest-facts", "--items", "name,income")
    assert bad.code == 2 and "items:" in bad.err
    assert jpki(data_dir, *base, "--service", "age", "--items", "dob").code == 2
    assert jpki(data_dir, "consent", "grant", "--resident-id", "nobody", "--verifier", "bank",
                "--service", "age").code == 3
    assert jpki(data_dir, "consent", "grant", "--resident-id", "r1", "--verifier", "ghost",
                "--service", "age").code == 3
    withdraw = ["consent", "withdraw", "--resident-id", "r1", "--verifier", "bank",
                "--service", "latest-facts"]
    assert jpki(data_dir, *withdraw).json["withdrawn"] is True
    assert jpki(data_dir, *withdraw).code == 3  # nothing left to withdraw
