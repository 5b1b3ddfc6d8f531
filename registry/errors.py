"""Domain exceptions with messages an operator can act on.

They are mapped at the edge: to exit codes by the CLI, to problem+json by the HTTP APIs and to
OCSP error statuses by the responder. A message never carries one of the 4 facts.
"""

from __future__ import annotations


class JPKIError(Exception):
    """Base of every expected failure; `exit_code` is what the CLI returns."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.field}: {message}" if self.field else message


class InvalidInput(JPKIError):
    """A flag, field or body that fails validation; nothing was written."""

    exit_code = 2
    http_status = 400


class ConfigError(JPKIError):
    """The configuration cannot be loaded or fails validation."""

    exit_code = 78  # EX_CONFIG


class NotFound(JPKIError):
    exit_code = 3
    http_status = 404


class Conflict(JPKIError):
    """The request contradicts the registry's state (a duplicate, a replay with another body)."""

    exit_code = 4
    http_status = 409


class NotInitialised(JPKIError):
    exit_code = 5
    http_status = 503
