"""Slow clients against a real `jpki serve` on 127.0.0.1, through raw sockets.

The daemon runs with `ocsp.request_timeout_seconds = 1` and an idle keep-alive timeout of 60 s,
so a connection closed well before 60 s was closed by the request-header deadline
(httpapi/deadline.py), not by aiohttp's keep-alive timer. Every wait is bounded by a socket
timeout; nothing asserts how fast anything is.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CONFIG, Daemon, copy_data_dir

REQUEST_TIMEOUT = 1
BOUND = 30  # seconds a socket waits for the server: well under the 60 s idle timeout


@pytest.fixture(scope="module")
def slow_daemon(template_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:

    tmp = tmp_path_factory.mktemp("slow")
    data_dir = tmp / "data"
    copy_data_dir(template_dir, data_dir)
    config = tmp / "slow.toml"
    config.write_text(
        CONFIG.read_text()
        .replace("request_timeout_seconds = 10", f"request_timeout_seconds = {REQUEST_TIMEOUT}")
        .replace("read_timeout_seconds = 10", "read_timeout_seconds = 1")
        .replace("idle_timeout_seconds = 15", "idle_timeout_seconds = 60")
        .replace('"municipalities.csv"', f'"{CONFIG.parent / "municipalities.csv"}"')
        .replace('"tariff.toml"', f'"{CONFIG.parent / "tariff.toml"}"'))
    daemon = Daemon(data_dir, config=config).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def connect(daemon: Daemon) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=BOUND)
    sock.settimeout(BOUND)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset) before the socket timeout."""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def healthz(daemon: Daemon) -> int:
    with urllib.request.urlopen(daemon.url + "/healthz", timeout=BOUND) as response:
        return int(response.status)


def test_half_a_request_line_is_closed_while_others_are_served(slow_daemon: Daemon) -> None:
    with connect(slow_daemon) as slow:
        slow.sendall(b"POST /ocsp HTT")
        # Meanwhile other clients are served normally.
        assert [healthz(slow_daemon) for _ in range(5)] == [200] * 5
        assert closed_by_server(slow)
    assert healthz(slow_daemon) == 200
    with urllib.request.urlopen(slow_daemon.metrics_url, timeout=BOUND) as response:
        metrics = response.read().decode()
    closed = [line for line in metrics.splitlines()
              if line.startswith("jpki_http_request_deadline_closed_total ")]
    assert closed and float(closed[0].split()[1]) >= 1, closed


def test_a_connection_that_never_sends_is_closed(slow_daemon: Daemon) -> None:
    with connect(slow_daemon) as silent:
        assert closed_by_server(silent)


def test_dribbled_headers_are_closed_despite_activity(slow_daemon: Daemon) -> None:
    with connect(slow_daemon) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        refused = False
        for _ in range(int(BOUND / 0.25)):  # bounded: one header byte every 0.25 s
            try:
                slow.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                refused = True
                break
            time.sleep(0.25)
        assert refused or closed_by_server(slow)


def test_idle_keep_alive_is_not_a_slow_request(slow_daemon: Daemon) -> None:
    """Between requests the idle timeout applies, not the request deadline."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with connect(slow_daemon) as client:
        for _ in range(2):
            client.sendall(request)
            answer = client.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            time.sleep(REQUEST_TIMEOUT * 2.5)  # idle, longer than the request deadline


def test_a_slow_body_gets_408(slow_daemon: Daemon) -> None:
    with connect(slow_daemon) as slow:
        slow.sendall(b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
                     b"Content-Type: application/ocsp-request\r\n\r\n" + b"\x30" * 10)
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
