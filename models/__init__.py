"""Online learning math for streamrec: numpy and the standard library only.

- :class:`BPRMF`: implicit-feedback matrix factorisation trained by online BPR-SGD.
- :class:`Popularity`: all-time or recently-popular items (cold-start fallback).
- :class:`IdMap`: growable string id to dense index map.
- :class:`Recommender`: the protocol all models implement;
  :class:`WorkerModel`: what the streaming worker calls on its factor model;
  :func:`event_weight` / :func:`event_weights` turn events into learning weights.
"""

from __future__ import annotations

from .base import DEFAULT_KIND_WEIGHTS, Recommender, WorkerModel, event_weight, event_weights
from .bpr import BPRMF
from .errors import InvalidInputError, ModelError, UnknownIdError
from .idmap import IdMap
from .popularity import Popularity

__all__ = [
    "BPRMF",
    "DEFAULT_KIND_WEIGHTS",
    "IdMap",
    "InvalidInputError",
    "ModelError",
    "Popularity",
    "Recommender",
    "UnknownIdError",
    "WorkerModel",
    "event_weight",
    "event_weights",
]
