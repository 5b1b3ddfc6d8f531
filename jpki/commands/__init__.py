"""Subcommand modules; each exposes `register(subparsers, parent)` and holds no business rule."""

from jpki.commands import ca, certs, crl, events, fees, ocsp, phone, processes, setup

COMMAND_MODULES = [setup, processes, certs, phone, events, ca, ocsp, crl, fees]
