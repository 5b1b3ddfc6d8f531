"""Secrets on disk: written once, never over anything, durable before the caller goes on."""

from __future__ import annotations

import os
from pathlib import Path


def write_once(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` (O_EXCL: an existing file is never replaced) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
