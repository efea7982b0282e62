r"""River's matrix factorisation behind our :class:`~models.Recommender` verbs, for comparisons.

River (``online-ml/river``) is a bench/dev extra, never a runtime dependency: it is imported
when a :class:`RiverMF` is created, and this module imports without it
(``pip install 'streamrec[bench]'`` to use it).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from .errors import InvalidInputError, ModelError, UnknownIdError
from .idmap import IdMap

__all__ = ["RiverKind", "RiverMF", "RiverNotInstalledError", "river_available"]

RiverKind = Literal["BiasedMF", "FunkMF"]
_INSTALL_HINT = "pip install 'streamrec[bench]'"


class RiverNotInstalledError(ModelError, ImportError):
    """River is needed (for :class:`RiverMF`) but not installed."""


def river_available() -> bool:
    """Whether River can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("river") is not None
    except (ImportError, ValueError):
        return False


def _check_weight(weight: float) -> float:
    w = float(weight)
    if not np.isfinite(w):
        raise InvalidInputError(f"weight must be finite, got {weight!r}")
    return w


class RiverMF:
    r"""River's ``reco.BiasedMF`` or ``reco.FunkMF`` speaking :class:`~models.Recommender`.

    River learns a *rating* regression: each event's learning weight is passed as the target
    ``y`` of River's ``learn_one(user=..., item=..., y=weight)``. With the default kind
    weights that is view = 1, like = 3, share = 5, a rating-like signal; with unit weights
    the target is constant and River has nothing to learn from.

    Scores are River's own predictions, computed for all known items at once from its
    learned parameters (kept in a numpy mirror updated after every event):

    .. math::

        \text{BiasedMF:}\quad \hat y_{ui} = \bar y + b_u + b_i + \langle \mathbf{v}_u, \mathbf{v}_i \rangle
        \qquad\qquad \text{FunkMF:}\quad \hat y_{ui} = \langle \mathbf{v}_u, \mathbf{v}_i \rangle

    Items score in order of first sight (:attr:`item_ids`); items the model has not learned
    score as a fresh item would, without its random latent vector (:math:`\bar y + b_u`, or 0).

    Parameters
    ----------
    kind
        ``"BiasedMF"`` or ``"FunkMF"``.
    n_factors
        Latent dimension (River's default, 10).
    seed
        Seed of River's latent initialiser.
    learning_rate
        Shorthand for plain SGD at this rate for every parameter (River's defaults:
        0.01 for BiasedMF, 0.1 for FunkMF).
    **river_kwargs
        Passed to the River class (optimisers, ``l2_*``, ...); River's defaults otherwise.

    Raises
    ------
    RiverNotInstalledError
        (a :class:`~models.errors.ModelError` and :class:`ImportError`) without River.

    Notes
    -----
    :meth:`to_bytes` is not supported: River's models serialise by pickling, which
    streamrec never does. This adapter is for offline comparisons (``streamrec eval``,
    ``bench/``), not for the worker.

    Examples
    --------
    >>> model = RiverMF("BiasedMF", seed=42)  # doctest: +SKIP
    >>> for _ in range(50):  # doctest: +SKIP
    ...     model.learn_batch(["ann", "ann", "bob"], ["jazz", "blues", "metal"], [5.0, 4.0, 1.0])
    >>> [item for item, _ in model.top_n("bob", 2, exclude=["metal"])]  # doctest: +SKIP
    ['jazz', 'blues']
    """

    def __init__(self, kind: RiverKind = "BiasedMF", n_factors: int = 10, seed: int | None = 0, *,
                 learning_rate: float | None = None, **river_kwargs: Any) -> None:
        if kind not in ("BiasedMF", "FunkMF"):
            raise InvalidInputError(f"kind must be 'BiasedMF' or 'FunkMF', got {kind!r}")
        try:
            # importlib, not an import statement: River stays out of `import models`
            reco = importlib.import_module("river.reco")
            optim = importlib.import_module("river.optim")
        except ImportError as e:
            raise RiverNotInstalledError(f"RiverMF needs River, which is not installed: {_INSTALL_HINT}") from e
        if learning_rate is not None:
            names = ("bias_optimizer", "latent_optimizer") if kind == "BiasedMF" else ("optimizer",)
            if any(name in river_kwargs for name in names):
                raise InvalidInputError(f"pass learning_rate or {' / '.join(names)}, not both")
            river_kwargs.update({name: optim.SGD(learning_rate) for name in names})
        self.kind = kind
        self.n_factors = int(n_factors)
        self.seed = seed
        self.river_model: Any = getattr(reco, kind)(n_factors=self.n_factors, seed=seed, **river_kwargs)
        """The wrapped River model (read-only use: the mirror is updated by :meth:`learn_one`)."""
        self._biased = kind == "BiasedMF"
        self._items = IdMap()
        self._V = np.zeros((16, self.n_factors))
        self._b = np.zeros(16)

    # ------------------------------------------------------------------ ids
    @property
    def n_items(self) -> int:
        """Number of known items."""
        return len(self._items)

    @property
    def item_ids(self) -> list[str]:
        """Known item ids in index order (a copy)."""
        return self._items.ids

    @property
    def n_users(self) -> int:
        """Number of known users."""
        return len(self.river_model.u_latents)

    def has_user(self, user: str) -> bool:
        """Whether ``user`` has been learned."""
        return user in self.river_model.u_latents

    def has_item(self, item: str) -> bool:
        """Whether ``item`` has been learned."""
        return item in self._items

    # ------------------------------------------------------------- learning
    def learn_one(self, user: str, item: str, weight: float = 1.0) -> None:
        """River's ``learn_one(user=user, item=item, y=weight)``."""
        river = self.river_model
        river.learn_one(user=user, item=item, y=_check_weight(weight))
        j = self._items.get(item)
        if j is None:
            j = int(self._items.index([item])[0])
            if j == len(self._b):
                self._V = np.concatenate([self._V, np.zeros_like(self._V)])
                self._b = np.concatenate([self._b, np.zeros_like(self._b)])
        self._V[j] = river.i_latents[item]
        if self._biased:
            self._b[j] = river.i_biases[item]

    def learn_batch(
        self, users: Sequence[str], items: Sequence[str], weights: np.ndarray | Sequence[float] | None = None
    ) -> None:
        """:meth:`learn_one` for each event in order (River learns one event at a time)."""
        if isinstance(users, str) or isinstance(items, str):
            raise InvalidInputError("users and items must be sequences of ids, not single strings")
        if len(users) != len(items) or (weights is not None and len(weights) != len(users)):
            raise InvalidInputError("users, items and weights must have the same length")
        w = [1.0] * len(users) if weights is None else [float(x) for x in weights]
        for user, item, weight in zip(users, items, w):
            self.learn_one(user, item, weight)

    # -------------------------------------------------------------- scoring
    def _user_params(self, user: str) -> tuple[float, np.ndarray]:
        river = self.river_model
        if user not in river.u_latents:  # `in`, not [], on River's defaultdicts: no side effect
            raise UnknownIdError(f"unknown user {user!r}")
        offset = river.global_mean.get() + river.u_biases.get(user, 0.0) if self._biased else 0.0
        return float(offset), river.u_latents[user]

    def score(self, user: str, items: Sequence[str] | None = None) -> np.ndarray:
        """River's predictions for ``items`` (all known items, in index order, if None).

        Raises :class:`~models.errors.UnknownIdError` for a user never learned.
        """
        offset, p = self._user_params(user)
        n = len(self._items)
        if items is None:
            out: np.ndarray = self._V[:n] @ p + self._b[:n] + offset
            return out
        if isinstance(items, str):
            raise InvalidInputError("items must be a sequence of ids, not a single string")
        idx = self._items.lookup(items)
        known = idx >= 0
        out = np.full(len(idx), offset)
        out[known] += self._V[idx[known]] @ p + self._b[idx[known]]
        return out

    def top_n(self, user: str, n: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The ``n`` best ``(item, score)`` for ``user``, best first, never an excluded item."""
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise InvalidInputError(f"n must be a non-negative integer, got {n!r}")
        if isinstance(exclude, str):
            raise InvalidInputError("exclude must be a collection of ids, not a single string")
        s = self.score(user)
        drop = [j for j in map(self._items.get, exclude) if j is not None]
        s[drop] = -np.inf
        k = min(int(n), len(s))
        cand = np.argpartition(-s, k - 1)[:k] if 0 < k < len(s) else np.arange(len(s))[:k]
        cand = cand[np.lexsort((cand, -s[cand]))]
        ids = self._items.ids
        return [(ids[j], float(s[j])) for j in cand.tolist() if s[j] > -np.inf]

    def top_n_batch(
        self, users: Sequence[str], n: int, exclude: Sequence[Iterable[str]] | None = None
    ) -> list[list[tuple[str, float]]]:
        """:meth:`top_n` for many users; ``[]`` for unknown users."""
        if isinstance(users, str):
            raise InvalidInputError("users must be a sequence of ids, not a single string")
        if exclude is not None and len(exclude) != len(users):
            raise InvalidInputError(f"exclude has {len(exclude)} entries for {len(users)} users")
        return [
            self.top_n(u, n, () if exclude is None else exclude[r]) if self.has_user(u) else []
            for r, u in enumerate(users)
        ]

    def to_bytes(self) -> bytes:
        """Not supported: River models serialise by pickling, and streamrec never pickles."""
        raise NotImplementedError(
            "RiverMF cannot be serialised: River models only pickle, which streamrec never does; "
            "use RiverMF for offline comparisons only"
        )

    def __repr__(self) -> str:
        return f"RiverMF(kind={self.kind!r}, n_factors={self.n_factors}, n_users={self.n_users}, n_items={self.n_items})"
