"""Composition root: command line, settings and daemon wiring. No business rule lives here."""
