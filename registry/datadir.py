"""The data directory is private: directories 0700, files 0600, whatever the umask.

The registry holds every resident's name, date of birth, sex and address, and the data directory
holds the encrypted CA keys, the development passphrases and the published CRLs. Nothing in it
is for other local users (the daemon serves CRLs itself, so they need no world-readable mode
either). Every place that creates something under the data directory asks for these modes
explicitly (a umask can only remove bits, never add them), and a directory or registry file that
group or others can reach is refused at start-up, as key files are, with the `chmod` that fixes
it: a service that went on would keep leaking.
"""

from __future__ import annotations

import os
from pathlib import Path

from registry.errors import ConfigError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# SQLite creates these next to the database with the database file's own mode.
REGISTRY_SUFFIXES = ("", "-wal", "-shm", "-journal")


def refuse_shared(path: Path, what: str) -> None:
    """Raise ConfigError if group or others have any access to `path` (a missing path passes)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return
    if mode & 0o077:
        fix = "chmod 700" if path.is_dir() else "chmod 600"
        raise ConfigError(f"{path}: {what} has mode {mode:o}, readable by group or others;"
                          f" {fix} it (and `chmod -R go-rwx` the data directory)")


def make_private_dirs(path: Path) -> Path:
    """Create `path` and any missing parents as 0700 (mkdir(parents=True) would give them
    the umask's mode); directories that already exist are left as they are."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # created meanwhile by another process: not ours to chmod
            continue
        os.chmod(directory, PRIVATE_DIR)  # exact, even under a umask like 0277
    return path


def create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist (an existing file is kept)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def prepare_dir(data_dir: Path) -> Path:
    """Create the data directory, private; refuse a shared one (any engine: it holds keys)."""
    make_private_dirs(data_dir)
    refuse_shared(data_dir, "the data directory")
    return data_dir


def prepare(data_dir: Path, registry_name: str) -> Path:
    """Create the data directory and an empty registry file, both private, before SQLite opens
    it (SQLite gives -wal and -shm the database file's mode); refuse shared ones."""
    prepare_dir(data_dir)
    registry = data_dir / registry_name
    create_private_file(registry)
    for suffix in REGISTRY_SUFFIXES:
        refuse_shared(registry.with_name(registry.name + suffix), "the registry")
    return registry


def fsync_dir(directory: Path) -> None:
    """Make a new or renamed directory entry durable (a file's own fsync does not cover the
    entry that names it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
