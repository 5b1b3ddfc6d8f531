"""A seeded, bounded fuzz run against a real `jpki serve` on 127.0.0.1 (issue 14).

Mutations of valid OCSP requests (made by `openssl ocsp`: plain, nonce, SHA-256, several
CertIDs, signed by a registered verifier) sent as DER POSTs and as base64 GETs: bit flips,
truncations, inserted and deleted bytes, DER length fields rewritten, slices duplicated. Then
mutated `/crl/` and `/ca/` paths. Nothing may answer 5xx, every OCSP answer must be an
OCSPResponse, the daemon must log no traceback and no error, and a valid request must still be
answered (and verify) afterwards.

`JPKI_FUZZ_CASES` sets the number of cases (default 1,200: about 10 s here on 2 shared cores),
`JPKI_FUZZ_SEED` the seed (a failure prints the case number and its bytes; the same seed and
count replay it).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import os
import random
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from asn1crypto import ocsp
from yarl import URL

from tests.helpers import Daemon, copy_data_dir, issue_args, jpki, openssl

CASES = int(os.environ.get("JPKI_FUZZ_CASES", "1200"))
SEED = int(os.environ.get("JPKI_FUZZ_SEED", "14"))
CONCURRENCY = 4
LOG_PROBLEMS = ("Traceback", " ERROR ", "internal error", "internal_error", "never awaited",
                "no current event loop")


@dataclass
class Target:
    daemon: Daemon
    token: str
    ca_pem: Path
    cert_pem: Path
    client_cert: Path
    client_key: Path
    seeds: dict[str, bytes]  # label -> a valid DER request
    signed: frozenset[str]  # labels of the signed seeds: sent without a bearer token
    paths: list[str]  # valid /ca/ and /crl/ paths


def _request(target_args: list[str], out: Path) -> bytes:
    result = openssl("ocsp", *target_args, "-reqout", str(out))
    assert out.exists(), result.stderr
    return out.read_bytes()


@pytest.fixture(scope="module")
def target(template_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    data_dir = tmp / "data"
    copy_data_dir(template_dir, data_dir)
    issued = jpki(data_dir, *issue_args("fuzz-1", tmp / "out"))
    assert issued.code == 0, issued.err
    other = jpki(data_dir, *issue_args("fuzz-2", tmp / "out2"))
    assert other.code == 0, other.err
    added = jpki(data_dir, "verifier", "add", "bank")
    assert added.code == 0, added.err
    client_key, client_cert = tmp / "client.key", tmp / "client.pem"
    made = openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(client_key),
                   "-out", str(client_cert), "-subj", "/CN=fuzz OCSP client", "-days", "30")
    assert made.returncode == 0, made.stderr
    assert jpki(data_dir, "verifier", "add", "broker", "--signer-cert",
                str(client_cert)).code == 0
    daemon = Daemon(data_dir).start()
    try:
        ca_pem = tmp / "ca.pem"
        with urllib.request.urlopen(daemon.url + "/ca/sign/g1.pem") as response:
            ca_pem.write_bytes(response.read())
        cert = issued.json["signature"]["certificate"]
        serial, serial2 = issued.json["signature"]["serial"], other.json["signature"]["serial"]
        base = ["-issuer", str(ca_pem)]
        out = tmp / "req.der"
        seeds = {
            "plain": _request([*base, "-cert", cert, "-no_nonce"], out),
            "nonce": _request([*base, "-cert", cert], out),
            "sha256": _request([*base, "-cert", cert, "-sha256", "-no_nonce"], out),
            "several": _request([*base, "-serial", "0x" + serial, "-serial", "0x" + serial2,
                                 "-serial", "0x5eed", "-no_nonce"], out),
            "signed": _request([*base, "-cert", cert, "-signer", str(client_cert),
                                "-signkey", str(client_key)], out),
        }
        paths = ["/ca/", "/ca/sign/g1.der", "/ca/auth/g1.pem", "/ca/sign/g1-g2-new-with-old.der",
                 "/crl/sign/g1/full.crl", "/crl/auth/g1/13104.crl", "/crl/sign/g1/00001.crl"]
        yield Target(daemon, added.json["token"], ca_pem, Path(cert), client_cert, client_key,
                     seeds, frozenset({"signed"}), paths)
    finally:
        daemon.stop()


# -- mutations ---------------------------------------------------------------------------------
def length_fields(der: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every DER length field found by walking the TLVs, best effort."""
    found: list[tuple[int, int]] = []

    def walk(start: int, end: int, depth: int) -> None:
        at = start
        while at + 2 <= end and depth < 12:
            tag = der[at]
            first = der[at + 1]
            size = 1 + (first & 0x7F if first & 0x80 else 0)
            if at + 1 + size > end:
                return
            length = first if not first & 0x80 else int.from_bytes(der[at + 2:at + 1 + size],
                                                                   "big")
            found.append((at + 1, size))
            body = at + 1 + size
            if body + length > end:
                return
            if tag & 0x20 or tag in (0x04, 0x03):  # constructed, or DER inside a string
                walk(body + (1 if tag == 0x03 else 0), body + length, depth + 1)
            at = body + length

    walk(0, len(der), 0)
    return found


def mutate(rng: random.Random, der: bytes) -> tuple[str, bytes]:
    """One to three mutations of `der`; the label names them (reported with a failure)."""
    data = bytearray(der)
    labels = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.choice(("flip", "truncate", "insert", "delete", "length", "length",
                           "boundary", "duplicate"))
        labels.append(kind)
        if not data:
            data = bytearray(rng.randbytes(rng.randint(1, 8)))
            continue
        at = rng.randrange(len(data))
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                position = rng.randrange(len(data))
                data[position] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data[at:at] = rng.randbytes(rng.choice((1, 2, 4, 16, 200)))
        elif kind == "delete":
            del data[at:at + rng.randint(1, 16)]
        elif kind == "length":
            fields = length_fields(bytes(data))
            if fields:
                offset, size = rng.choice(fields)
                current = int.from_bytes(data[offset + 1:offset + size], "big") if size > 1 \
                    else data[offset]
                data[offset:offset + size] = rng.choice((
                    bytes([max(0, min(0x7F, current + rng.choice((-2, -1, 1, 2))))]),
                    b"\x00", b"\x7f", b"\x80", b"\x81\x00", b"\x81\xff", b"\x82\xff\xff",
                    b"\x84\xff\xff\xff\xff", b"\x89" + b"\xff" * 9,
                    b"\x81" + bytes([current & 0xFF]),
                    b"\x82" + (current & 0xFFFF).to_bytes(2, "big"),
                ))
        elif kind == "boundary":
            data[at] = rng.choice((0x00, 0xFF, 0x80, 0x7F, 0x30, 0xA0, 0x05))
        else:  # duplicate a slice in place
            end = min(len(data), at + rng.randint(1, 64))
            data[at:at] = data[at:end]
    return "+".join(labels), bytes(data)


def get_path(rng: random.Random, der: bytes) -> str:
    """RFC 5019 §5 GET forms, some with the base64 text itself mangled."""
    text = base64.b64encode(der).decode()
    form = rng.choice(("quoted", "bare", "urlsafe", "unpadded", "mangled"))
    if form == "bare":
        return text  # '+' and '/' unencoded: the '/' makes other path segments
    if form == "urlsafe":
        return base64.urlsafe_b64encode(der).decode()
    if form == "unpadded":
        return urllib.parse.quote(text.rstrip("="), safe="")
    if form == "mangled" and text:
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice("=%*._-~!$&'()+,;@:"))
        return urllib.parse.quote("".join(chars), safe="%=")
    return urllib.parse.quote(text, safe="")


PATH_PIECES = ("9" * 20, "9" * 300, "9" * 5000, "0", "-1", "g", "..", "%2e%2e", "%00", "%2F",
               "%ff", "%", "sign", "auth", "full", "00001", "99999", "new-with-old",
               "old-with-new", ".der", ".pem", ".crl", "//", "%E3%81%82", "~", "+", "g1")


def mutate_path(rng: random.Random, path: str) -> str:
    """A /ca/ or /crl/ path with segments replaced, digits grown, pieces inserted."""
    kind = rng.choice(("digits", "insert", "replace", "truncate", "long"))
    if kind == "digits":
        return "".join(c * rng.choice((1, 1, 30, 400)) if c.isdigit() else c for c in path)
    if kind == "insert":
        at = rng.randrange(len(path) + 1)
        return path[:at] + rng.choice(PATH_PIECES) + path[at:]
    if kind == "replace":
        parts = path.split("/")
        index = rng.randrange(1, len(parts))
        parts[index] = rng.choice(PATH_PIECES) + rng.choice(("", ".der", ".crl", "-g2"))
        return "/".join(parts)
    if kind == "truncate":
        return path[:rng.randrange(1, len(path) + 1)]
    return path + "g" + "1" * rng.choice((100, 9000))


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Case:
    number: int
    label: str
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]


def cases(target: Target, rng: random.Random, count: int) -> Iterator[Case]:
    labels = sorted(target.seeds)
    bearer = {"Authorization": f"Bearer {target.token}"}
    for number in range(count):
        roll = rng.random()
        if roll < 0.15:
            path = mutate_path(rng, rng.choice(target.paths))
            yield Case(number, "path", "GET", path, None, {})
            continue
        seed = rng.choice(labels)
        label, der = mutate(rng, target.seeds[seed])
        headers = {} if seed in target.signed else dict(bearer)
        if rng.random() < 0.05:
            headers = rng.choice(({}, {"Authorization": "Bearer vf_wrong"},
                                  {"Authorization": "Basic Zm9vOmJhcg=="}))
        if roll < 0.65:
            yield Case(number, f"post {seed} {label}", "POST", "/ocsp", der,
                       {**headers, "Content-Type": "application/ocsp-request"})
        else:
            yield Case(number, f"get {seed} {label}", "GET", "/ocsp/" + get_path(rng, der),
                       None, headers)


async def run(target: Target, all_cases: list[Case],
              check: Callable[[Case, int, bytes], str | None]) -> list[str]:
    failures: list[str] = []
    queue: asyncio.Queue[Case] = asyncio.Queue()
    for case in all_cases:
        queue.put_nowait(case)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            while not queue.empty():
                case = queue.get_nowait()
                url = URL(target.daemon.url + case.path, encoded=True)
                try:
                    async with session.request(case.method, url, data=case.body,
                                               headers=case.headers) as response:
                        body = await response.read()
                        problem = check(case, response.status, body)
                except (aiohttp.ClientError, ValueError) as exc:  # refused before sending
                    problem = None if isinstance(exc, ValueError) else f"client error {exc!r}"
                if problem is not None:
                    failures.append(f"case {case.number} ({case.label}) {case.method} "
                                    f"{case.path[:120]} body={(case.body or b'').hex()[:400]}:"
                                    f" {problem}")

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return failures


async def test_fuzzed_ocsp_requests_and_paths_never_give_5xx(target: Target) -> None:
    rng = random.Random(SEED)
    all_cases = list(cases(target, rng, CASES))
    statuses: collections.Counter[str] = collections.Counter()

    def check(case: Case, status: int, body: bytes) -> str | None:
        if status >= 500:
            return f"HTTP {status}"
        if case.path.startswith("/ocsp") and status == 200:
            try:
                answer = ocsp.OCSPResponse.load(body, strict=True)
                verdict = answer["response_status"].native
            except ValueError as exc:
                return f"not an OCSPResponse: {exc}"
            if verdict == "internal_error":
                return "internalError"
            statuses[verdict] += 1
        else:
            statuses[f"http {status}"] += 1
        return None

    failures = await run(target, all_cases, check)
    print(f"\nfuzz: {len(all_cases)} cases (seed {SEED}): {dict(sorted(statuses.items()))}")
    assert not failures, (f"{len(failures)} of {len(all_cases)} cases failed:\n"
                          + "\n".join(failures[:20]))
    # afterwards: a valid request is still answered, and the answer verifies
    for extra in ([], ["-signer", str(target.client_cert), "-signkey", str(target.client_key)]):
        auth = [] if extra else ["-header", f"Authorization=Bearer {target.token}"]
        result = openssl("ocsp", "-url", target.daemon.url + "/ocsp", "-issuer",
                         str(target.ca_pem), "-CAfile", str(target.ca_pem), "-cert",
                         str(target.cert_pem), *auth, *extra)
        text = result.stdout + result.stderr
        assert "Response verify OK" in text and "Response Verify Failure" not in text, text
        assert f"{target.cert_pem}: good" in text, text
    log = (target.daemon.data_dir / f"daemon-{target.daemon.port}.log").read_text()
    for problem in LOG_PROBLEMS:
        assert problem not in log, log[-5000:]
