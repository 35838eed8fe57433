"""One tree of errors: transient ones are retried, permanent ones are recorded and final."""

from __future__ import annotations


class OutreachError(Exception):
    """Raised for any failure the service itself understands."""


class TransientError(OutreachError):
    """Raised when an operation may succeed if retried later (network, lock, provider busy)."""


class PermanentError(OutreachError):
    """Raised when retrying cannot help; the outcome is recorded with its code."""


class ConfigurationError(OutreachError):
    """Raised when a setting is missing or malformed; the message names the setting."""


class RenderError(PermanentError):
    """Raised when a template is missing, unknown or cannot be rendered with its context."""


class StoreUnavailable(TransientError):
    """Raised when the database cannot be reached or cannot store something durably."""


class CapUnavailable(TransientError):
    """Raised when frequency caps cannot be checked or reserved; the message must wait."""
