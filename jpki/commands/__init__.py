"""Subcommand modules; each exposes `register(subparsers, parent)` and holds no business rule."""

from jpki.commands import ca, certs, crl, events, fees, ocsp, setup

COMMAND_MODULES = [setup, certs, events, ca, ocsp, crl, fees]
