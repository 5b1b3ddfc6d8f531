"""A seeded, bounded fuzz of POST /registry/events and /linkage/v1/ (issue 14, "Fuzzing").

A mutation loop over valid events (odd types, huge numbers, deep nesting, lone surrogates,
unknown and missing fields, broken JSON, batches) and over linkage requests (odd services,
serials, thresholds and headers), against the whole daemon app served by aiohttp on
127.0.0.1. Asserted: no 5xx, no ERROR record or traceback in the server's log, and afterwards
a valid event applies and a valid linkage request gets the right answer.

`JPKI_FUZZ_CASES` sets the number of cases (default 1,000, half events, half linkage: a few
seconds on two cores); `JPKI_FUZZ_SEED` the seed. A failure names both, so it replays exactly.
Against the events code before issue 14's fixes, the first 400 cases of the default seed gave
20 answers of 500 (huge integers, deep nesting, lone surrogates); now none.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from ca.kinds import CertKind
from registry import consents, operators, verifiers
from registry.clock import JST
from tests.stack import Stack, frozen_context, running
from tests.test_linkage_fees import SHINJUKU, TOKENS, issue, validity_check

CASES = int(os.environ.get("JPKI_FUZZ_CASES", "1000"))
SEED = int(os.environ.get("JPKI_FUZZ_SEED", "20261114"))
START = datetime(2026, 11, 14, 10, 0, tzinfo=JST)
SERVICES = ("predecessor", "successor", "counterpart", "latest-facts", "age")
EVENT_TYPES = ("change", "emigration_keep_card", "deletion", "stop_request", "card_lost",
               "key_compromise", "record_error", "destroyed_before_delivery")


class Raw:
    """JSON text spliced in as is: what `json.dumps` cannot produce (huge literals, depth)."""

    def __init__(self, text: str) -> None:
        self.text = text


def to_text(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + to_text(v)
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_text(item) for item in value) + "]"
    return json.dumps(value)


def odd_value(rng: random.Random) -> Any:
    depth = rng.choice((3, 40, 2000, 6000))
    return rng.choice([
        None, 0, -1, 10**30, True, [], {}, "", " ", "\ud800", "\udfff", "\u0000", "\n",
        "\u202e", "\u2028", "山田\u3000太郎", "x" * rng.choice((129, 5000)), 1.5,
        Raw("9" * rng.choice((4300, 4301, 5000))), Raw("-" + "1" * 5000), Raw("1e999999"),
        Raw("NaN"), Raw("-Infinity"), Raw("[" * depth + "]" * depth),
        Raw('{"a":' * depth + "1" + "}" * depth), "2026-02-30T10:00:00+09:00",
        "2026-11-14T10:00:00", "9999-12-31T23:59:59+14:00", "13104", "1980-02-29",
        rng.choice(EVENT_TYPES), "r2", "\\", '"', "%00", "../../etc/passwd",
    ])


def odd_key(rng: random.Random) -> str:
    return rng.choice(["x\nINFO jpki.events: event applied id=forged", "\ud800", "", " ",
                       "event_id ", "EVENT_ID", "__proto__", "name\r\n", "\u202e", "a" * 300,
                       "auth_contents_wrong\u0000", "日本"])


def valid_event(rng: random.Random, n: int) -> dict[str, Any]:
    kind = rng.choice(EVENT_TYPES)
    event: dict[str, Any] = {"event_id": f"fz-{SEED}-{n}", "resident_id": "r2", "type": kind,
                             "occurred_at": "2026-11-14T09:00:00+09:00"}
    if kind == "change":
        event.update(SHINJUKU, address=rng.choice([SHINJUKU["address"],
                                                   "東京都千代田区千代田1番1号"]),
                     municipality_code=rng.choice(["13104", "13101"]))
    if kind == "record_error" and rng.random() < 0.5:
        event["auth_contents_wrong"] = True
    return event


def mutate(rng: random.Random, event: dict[str, Any]) -> Any:
    for _ in range(rng.choice((1, 1, 2, 3))):
        move = rng.randrange(6)
        if move == 0 and event:
            event[rng.choice(list(event))] = odd_value(rng)
        elif move == 1 and event:
            del event[rng.choice(list(event))]
        elif move == 2:
            event[odd_key(rng)] = odd_value(rng)
        elif move == 3:
            event["type"] = rng.choice([*EVENT_TYPES, "Change", "", "deletion ", "card_lost\n"])
        elif move == 4:
            event[rng.choice(["name", "dob", "sex", "address", "municipality_code",
                              "name_alt", "auth_contents_wrong"])] = odd_value(rng)
        else:
            event["event_id"] = rng.choice([f"fz-{rng.randrange(50)}", "a" * 129, "id with space",
                                            "id\n", "\u00e9", odd_value(rng)])
    return event


def event_body(rng: random.Random, n: int) -> bytes:
    shape = rng.randrange(10)
    if shape < 5:
        text = to_text(mutate(rng, valid_event(rng, n)))
    elif shape < 8:
        items = [mutate(rng, valid_event(rng, n * 10 + i)) if rng.random() < 0.6
                 else valid_event(rng, n * 10 + i) for i in range(rng.randint(1, 6))]
        if rng.random() < 0.2:
            items.insert(rng.randrange(len(items) + 1), odd_value(rng))
        text = to_text(items)
    else:
        text = to_text(valid_event(rng, n))
    body = text.encode("utf-8", "surrogatepass")
    if shape == 9 and body:  # byte-level damage
        cut = rng.randrange(len(body))
        body = rng.choice([body[:cut], body[:cut] + bytes([rng.randrange(256)]) + body[cut:],
                           body[:cut] + b"\xff\xfe" + body[cut + 1:], b"\xef\xbb\xbf" + body])
    return body


def odd_serial(rng: random.Random, good: str) -> str:
    return rng.choice([
        good, good.upper(), "0x" + good, good[:-1], good + "0", "0" * 40, "-1", "",
        "9" * rng.choice((41, 3000)), "zz-top", "%00", "%2e%2e%2f", "%F0%9F%92%A9", "%ED%A0%80",
        "%0aINFO%20forged", good + "%20", "g" * 40, "1" * 41, "+" + good, good + "?x=%ff",
    ])


def linkage_target(rng: random.Random, good: str) -> tuple[str, dict[str, str]]:
    """A request line under aiohttp's 8,190-byte limit: a longer one never reaches a handler
    (aiohttp answers 400 itself; its ERROR log line for it is issue 14, defect 4)."""
    service = rng.choice([*SERVICES, "Age", "age/extra", "", "..", "%61ge"])
    path = f"/linkage/v1/{service}/{odd_serial(rng, good)}"
    query = rng.choice(["", "?at_least=18", "?at_least=19", "?at_least=" + "9" * 3000,
                        "?at_least=-1", "?at_least=%00", "?at_least=18&at_least=65",
                        "?at_least=1e2", "?chain=all", "?chain=%ff", "?at_least=%E2%91%A0"])
    headers = {"Authorization": rng.choice([
        "Bearer {token}", "Bearer {token}", "Bearer vf_nope", "Bearer", "Bearer  ", "Basic x",
        "bearer {token}", "Bearer {token}\t", "Bearer " + "A" * 5000, ""])}
    if rng.random() < 0.3:
        headers["JPKI-Check-Purpose"] = rng.choice(["status-confirmation", "x" * 300, "\t"])
    return path + query, headers


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    context, clock = frozen_context(tmp_path / "data", START)
    async with running(context, clock) as item:
        yield item
    context.store.close()


def server_problems(records: list[logging.LogRecord]) -> list[str]:
    return [record.getMessage() for record in records
            if record.levelno >= logging.ERROR or record.exc_info]


async def test_fuzz_events_and_linkage(stack: Stack, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    store, clock = stack.context.store, stack.clock
    pair = issue(stack, tmp_path, "r1")
    for resident_id in ("r2", "r3"):
        issue(stack, tmp_path, resident_id)
    sig = pair.issued[CertKind.SIGNATURE].serial
    auth = pair.issued[CertKind.AUTHENTICATION].serial
    operator_token = operators.add(store, clock, "fuzz-feed", actor="fuzz-test")
    bank, bank_token = verifiers.add(store, clock, "bank")
    TOKENS[bank.id] = bank_token
    for service in ("linkage", "age"):
        consents.grant(store, clock, "r1", bank, service, ())
    await validity_check(stack, bank, sig, CertKind.SIGNATURE)

    rng = random.Random(SEED)
    statuses: dict[int, int] = {}
    failures: list[str] = []
    for n in range(CASES):
        if n % 2 == 0:
            body = event_body(rng, n)
            token = operator_token if rng.random() < 0.9 else "op_wrong"
            async with stack.session.post(
                    stack.url + "/registry/events", data=body,
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": rng.choice(["application/json", "text/plain"])}
            ) as response:
                await response.read()
                status = response.status
            what = f"events body {body[:120]!r}"
        else:
            path, headers = linkage_target(rng, sig)
            headers = {k: v.replace("{token}", bank_token) for k, v in headers.items()}
            async with stack.session.get(URL(stack.url + path, encoded=True),
                                         headers=headers) as response:
                await response.read()
                status = response.status
            what = f"linkage {path[:120]}"
        statuses[status] = statuses.get(status, 0) + 1
        if status >= 500:
            failures.append(f"case {n}: {status} for {what}")

    context = f"JPKI_FUZZ_SEED={SEED} JPKI_FUZZ_CASES={CASES} statuses={statuses}"
    assert not failures, f"{context}\n" + "\n".join(failures[:20])
    assert not server_problems(caplog.records), context
    assert not [r for r in caplog.records if "\n" in r.getMessage()], context

    # afterwards: a valid event applies...
    event = {"event_id": f"after-{SEED}", "resident_id": "r3", "type": "card_lost",
             "occurred_at": "2026-11-14T09:30:00+09:00"}
    async with stack.session.post(stack.url + "/registry/events", json=event,
                                  headers={"Authorization": f"Bearer {operator_token}"}
                                  ) as response:
        outcome = await response.json()
    assert response.status == 200 and outcome["status"] == "applied", (context, outcome)
    assert {item["reason"] for item in outcome["revoked"]} == {"certificateHold"}
    assert len(outcome["revoked"]) == 2
    # ...and a valid linkage request gets the right answer
    status, body = await stack.get(f"/linkage/v1/counterpart/{sig}", bank_token)
    assert status == 200 and body["counterpart"] == {"serial": auth, "kind": "authentication"}
    status, body = await stack.get(f"/linkage/v1/age/{sig}?at_least=20", bank_token)
    assert status == 200 and body == {"serial": sig, "at_least": 20, "result": True}
    print(f"fuzz: {CASES} cases, seed {SEED}, statuses {statuses}")
