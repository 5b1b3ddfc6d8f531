"""`jpki run`: both long-running processes, in their two security contexts, under one command.

`jpki signer` (holds the CA keys, no network port) and `jpki serve` (faces the network, holds
responder keys only) run as separate child processes, so that nothing the network reaches
shares an address space with a CA key. The serving child does not even inherit the CA
passphrase variable or the CA token's PIN variable. Ctrl-C or SIGTERM stops both; when either
exits on its own, the other is stopped too and `jpki run` reports which one failed and how.
In production run the two as different OS users instead (README, "Two roles").
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("jpki.run")
STOP_GRACE_SECONDS = 15.0


def _command(role: str, common: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "jpki.cli", role, *common]


def supervise(common: Sequence[str], serve_args: Sequence[str], secret_env: Sequence[str],
              cwd: Path | None = None) -> int:
    """Start signer and serve; return 0 after a requested stop, 1 if a child failed."""
    serve_env = {k: v for k, v in os.environ.items() if k not in set(secret_env)}
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGHUP, lambda *_: forward_signal(children.get("serve"), signal.SIGHUP))
    try:
        children["signer"] = subprocess.Popen(_command("signer", common), cwd=cwd)
        children["serve"] = subprocess.Popen([*_command("serve", common), *serve_args],
                                             env=serve_env, cwd=cwd)
        log.info("started signer (pid %d) and serve (pid %d)", children["signer"].pid,
                 children["serve"].pid)
        failed: str | None = None
        while not stopping:
            exited = first_exited(children)
            if exited is not None:
                failed, code = exited
                print(f"jpki run: {failed} exited with code {code}; stopping the other"
                      " process", file=sys.stderr, flush=True)
                break
            time.sleep(0.2)
        stop_all(children)
        return 1 if failed else 0
    finally:
        stop_all(children)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def first_exited(children: dict[str, subprocess.Popen[bytes]]) -> tuple[str, int] | None:
    """(name, exit code) of a child that has exited, if any: one exit stops them all."""
    for name, child in children.items():
        code = child.poll()
        if code is not None:
            return name, code
    return None


def forward_signal(child: subprocess.Popen[bytes] | None, signum: int) -> None:
    """`signum` to `child` if it is still running (a reaped pid may already be reused)."""
    if child is not None and child.poll() is None:
        child.send_signal(signum)


def stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every child still running; SIGKILL to those still up after the grace."""
    for child in children.values():
        forward_signal(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for role, child in children.items():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", role, STOP_GRACE_SECONDS)
            child.kill()
            child.wait()
