"""Subcommand modules; each exposes `register(subparsers, parent)` and holds no business rule."""

from jpki.commands import ca, certs, crl, events, fees, ocsp, processes, setup

COMMAND_MODULES = [setup, processes, certs, events, ca, ocsp, crl, fees]
