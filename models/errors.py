"""Exceptions raised by :mod:`models`."""

from __future__ import annotations

__all__ = ["ModelError", "UnknownIdError", "InvalidInputError"]


class ModelError(Exception):
    """Root of every error raised by :mod:`models`.

    Catch this to handle any model failure (unknown ids, bad inputs, corrupt
    serialised state) without depending on the concrete subclass.

    Examples
    --------
    >>> from models.errors import ModelError, UnknownIdError
    >>> issubclass(UnknownIdError, ModelError) and issubclass(UnknownIdError, KeyError)
    True
    """


class UnknownIdError(ModelError, KeyError):
    """A user or item id the model has never seen (also a :class:`KeyError`)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InvalidInputError(ModelError, ValueError):
    """Malformed arguments, hyperparameters or serialised data (also a :class:`ValueError`)."""
