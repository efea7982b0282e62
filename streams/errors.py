"""The root exception of streamrec's service layer; one subclass per area."""

from __future__ import annotations

__all__ = ["StreamrecError", "CacheUnavailable"]


class StreamrecError(Exception):
    """Root of every error streamrec raises on purpose."""


class CacheUnavailable(StreamrecError):
    """Redis could not be reached; the caller gets a clear answer instead of a raw connection error."""
