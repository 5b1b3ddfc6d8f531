"""Subcommand modules; each exposes `register(subparsers, parent)` and holds no business rule."""

from jpki.commands import certs, crl, setup

COMMAND_MODULES = [setup, certs, crl]
