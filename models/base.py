"""The shared recommender interfaces (offline verbs, what the streaming worker calls) and event weighting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from .errors import InvalidInputError

__all__ = ["Recommender", "WorkerModel", "DEFAULT_KIND_WEIGHTS", "event_weight", "event_weights"]

#: Base weight of each event kind (read-only).
DEFAULT_KIND_WEIGHTS: Mapping[str, float] = MappingProxyType({"view": 1.0, "like": 3.0, "share": 5.0})

#: The watch-time ratio is capped here, so a re-watched item counts at most double.
_MAX_WATCH_RATIO = 2.0


@runtime_checkable
class Recommender(Protocol):
    """The verbs every model in :mod:`models` implements.

    ``learn_*`` feed positive (implicit) interactions, ``score``/``top_n*``
    rank items for a user, ``to_bytes`` serialises the whole state (each class
    also has a ``from_bytes`` classmethod). Models may accept extra optional
    arguments (e.g. :class:`~models.Popularity` takes event timestamps).

    Examples
    --------
    >>> from models import BPRMF, Popularity, Recommender
    >>> isinstance(BPRMF(), Recommender), isinstance(Popularity(), Recommender)
    (True, True)
    """

    def learn_one(self, user: str, item: str, weight: float = 1.0) -> None: ...

    def learn_batch(
        self, users: Sequence[str], items: Sequence[str], weights: np.ndarray | None = None
    ) -> None: ...

    def score(self, user: str, items: Sequence[str] | None = None) -> np.ndarray: ...

    def top_n(self, user: str, n: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]: ...

    def top_n_batch(
        self, users: Sequence[str], n: int, exclude: Sequence[Iterable[str]] | None = None
    ) -> list[list[tuple[str, float]]]: ...

    def to_bytes(self) -> bytes: ...


@runtime_checkable
class WorkerModel(Protocol):
    """What the streaming worker calls on its factor model: implement it to plug in another model.

    :class:`~streams.worker.learner.Learner` and :class:`~streams.worker.exchange.ItemExchange` call
    exactly these members (the health records and the item-log restore read the two
    counts). Ids are strings. A model numbers its items 0, 1, 2, ... in the order it
    creates them and never renumbers them: the *index*. Every worker holds a full
    replica of the items and exchanges its additive changes to them with the others;
    each user is learned by one worker, which checkpoints the user's vector.

    - ``n_factors``: length of every user and item vector; restored states are checked against it.
    - ``covisit_candidates``: co-visited items each recent item brings to ranking (its strongest), the
      neighbours an item snapshot keeps.
    - ``n_users``, ``n_items``: known users and items, for the health records and the log of a restore.
    - ``has_user(user)``: whether the user gets a recommendation list.
    - ``learn_batch(users, items, weights, *, item_tags, update_items)``: learn a batch of events;
      those with ``update_items`` False move only their user (their item change is already in the item log).
    - ``add_items(items, tags)``: create a batch's new items before it is learned; returns them, so that
      their starting vectors are proposed to the other workers.
    - ``top_n_matrix(users, n, exclude)``: the recommendation lists (ids, and scores as one array).
    - ``user_vectors(users)`` / ``set_user_vectors(users, vectors)``: checkpoint and restore users.
    - ``restore_sessions(users, recent_items)``: after ``set_user_vectors``, restore what ranking keeps of
      the users' last events from their checkpointed history (oldest first); a model without such
      state does nothing.
    - ``item_index(items)`` / ``item_ids_at(indices)``: item ids to indices (``-1``: unknown) and back.
    - ``item_vectors(items)`` / ``set_item_vectors(items, vectors, biases)``: read and overwrite item rows
      (proposals, snapshots, restore).
    - ``take_item_deltas()``: indices, vector and bias changes learned since the last call, to publish.
    - ``peek_item_deltas(indices)``: the changes not taken yet, subtracted from an item snapshot.
    - ``add_item_deltas(indices, vectors, biases, *, unique)``: merge other workers' changes.
    - ``take_covisit_deltas()``: source and destination indices and counts of the co-visit pairs (items
      engaged one after the other) counted since the last call, to publish; a model without co-visitation
      counts returns empty arrays.
    - ``add_covisit_counts(src_indices, dst_indices, counts)``: merge other workers' co-visit counts.
    - ``peek_covisit_deltas()``: the pairs ``take_covisit_deltas`` would return, not taken (subtracted from
      an item snapshot).
    - ``covisit_rows(indices)`` / ``set_covisit_rows(indices, neighbour_indices, counts)``: read and replace
      items' co-visit neighbours (``(n, m)``, -1 for none) and counts (item snapshots, restore).
    - ``item_tags(item)`` / ``set_item_tags(items, tags)``: tags of items known from their metadata.

    Examples
    --------
    >>> from models import BPRMF, WorkerModel
    >>> isinstance(BPRMF(), WorkerModel)
    True

    Co-visit counts travel between two replicas:

    >>> mine, theirs = BPRMF(n_factors=2, track_item_deltas=True), BPRMF(n_factors=2)
    >>> mine.learn_batch(["u", "u"], ["a", "b"])  # a user engages a, then b
    >>> src, dst, counts = mine.take_covisit_deltas()
    >>> _ = theirs.add_items(["a", "b", "c"])  # the same indices here
    >>> theirs.learn_batch(["v"], ["a"])
    >>> before = theirs.score("v")
    >>> theirs.add_covisit_counts(src, dst, counts)
    >>> [item for item, gain in zip(theirs.item_ids, theirs.score("v") - before) if gain > 0]
    ['b']

    ... and an item's neighbours through a snapshot:

    >>> neighbours, counts = theirs.covisit_rows(theirs.item_index(["a"]))
    >>> restored = BPRMF(n_factors=2)
    >>> _ = restored.add_items(["a", "b", "c"])
    >>> restored.set_covisit_rows(restored.item_index(["a"]), neighbours, counts)
    >>> [restored.item_ids_at(n[c > 0]) for n, c in zip(*restored.covisit_rows(restored.item_index(["a"])))]
    [['b']]
    """

    n_factors: int

    @property
    def covisit_candidates(self) -> int: ...

    @property
    def n_users(self) -> int: ...

    @property
    def n_items(self) -> int: ...

    def has_user(self, user: str) -> bool: ...

    def learn_batch(
        self,
        users: Sequence[str],
        items: Sequence[str],
        weights: np.ndarray | Sequence[float] | None = None,
        *,
        item_tags: Sequence[Iterable[str] | None] | None = None,
        update_items: np.ndarray | Sequence[bool] | None = None,
    ) -> None: ...

    def add_items(self, items: Sequence[str], tags: Sequence[Iterable[str] | None] | None = None) -> list[str]: ...

    def top_n_matrix(
        self, users: Sequence[str], n: int, exclude: Sequence[Iterable[str]] | None = None
    ) -> tuple[list[list[str]], np.ndarray]: ...

    def user_vectors(self, users: Sequence[str]) -> np.ndarray: ...

    def set_user_vectors(self, users: Sequence[str], vectors: np.ndarray) -> None: ...

    def restore_sessions(self, users: Sequence[str], recent_items: Sequence[Sequence[str]]) -> None: ...

    def item_index(self, items: Sequence[str]) -> np.ndarray: ...

    def item_ids_at(self, indices: np.ndarray) -> list[str]: ...

    def item_vectors(self, items: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def set_item_vectors(self, items: Sequence[str], vectors: np.ndarray, biases: np.ndarray) -> None: ...

    def take_item_deltas(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def peek_item_deltas(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def add_item_deltas(
        self, indices: np.ndarray, vectors: np.ndarray, biases: np.ndarray, *, unique: bool = False
    ) -> None: ...

    def take_covisit_deltas(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def add_covisit_counts(self, src_rows: np.ndarray, dst_rows: np.ndarray, counts: np.ndarray) -> None: ...

    def peek_covisit_deltas(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def covisit_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def set_covisit_rows(self, rows: np.ndarray, neighbour_rows: np.ndarray, counts: np.ndarray) -> None: ...

    def item_tags(self, item: str) -> tuple[str, ...]: ...

    def set_item_tags(self, items: Sequence[str], tags: Sequence[Iterable[str] | None]) -> None: ...


if TYPE_CHECKING:  # for the type checker only: BPRMF is a WorkerModel, argument and return types included
    from .bpr import BPRMF

    def _bprmf_is_a_worker_model(model: BPRMF) -> WorkerModel:
        return model


def _check_watch_params(watch_time_weight: float, watch_time_ref_ms: float) -> None:
    if not watch_time_weight >= 0.0:
        raise InvalidInputError(f"watch_time_weight must be >= 0, got {watch_time_weight!r}")
    if not watch_time_ref_ms > 0.0:
        raise InvalidInputError(f"watch_time_ref_ms must be > 0, got {watch_time_ref_ms!r}")


def _kind_weight(kind: str, kind_weights: Mapping[str, float]) -> float:
    try:
        return float(kind_weights[kind])
    except KeyError:
        raise InvalidInputError(
            f"unknown event kind {kind!r}; expected one of {sorted(kind_weights)}"
        ) from None


def event_weight(
    kind: str,
    watch_ms: int | None = None,
    duration_ms: int | None = None,
    *,
    kind_weights: Mapping[str, float] = DEFAULT_KIND_WEIGHTS,
    watch_time_weight: float = 0.0,
    watch_time_ref_ms: float = 15000.0,
) -> float:
    r"""Learning weight of one implicit-feedback event.

    .. math::

        w = w_{\mathrm{kind}} \, (1 + \alpha \, \min(r, 2)), \qquad
        r = \begin{cases} t_{\mathrm{watch}} / t_{\mathrm{duration}} & \text{if the duration is known} \\
                          t_{\mathrm{watch}} / t_{\mathrm{ref}} & \text{otherwise} \end{cases}

    so ``r = 1`` means "watched it all" (or one reference watch) and
    re-watches count at most double. A missing (``None``, negative or NaN)
    ``watch_ms`` gives ``r = 0``. With the default ``watch_time_weight``
    (``alpha``) of 0 only the kind matters.

    Parameters
    ----------
    kind
        Event kind, a key of ``kind_weights``.
    watch_ms
        Watch time in milliseconds, if known.
    duration_ms
        Item length in milliseconds, if known; non-positive means unknown.
    kind_weights
        Base weight per kind.
    watch_time_weight
        ``alpha`` above, >= 0.
    watch_time_ref_ms
        Reference watch time used when the duration is unknown, > 0.

    Raises
    ------
    InvalidInputError
        (a :class:`~models.errors.ModelError`) for an unknown kind or bad parameters.

    Examples
    --------
    >>> event_weight("like")
    3.0
    >>> event_weight("view", watch_ms=30000, watch_time_weight=0.5)
    2.0
    >>> event_weight("view", watch_ms=5000, duration_ms=10000, watch_time_weight=1.0)
    1.5
    """
    _check_watch_params(watch_time_weight, watch_time_ref_ms)
    w = _kind_weight(kind, kind_weights)
    if watch_time_weight and watch_ms is not None and watch_ms >= 0:  # NaN fails >= 0
        ref = duration_ms if duration_ms is not None and duration_ms > 0 else watch_time_ref_ms
        w *= 1.0 + watch_time_weight * min(watch_ms / ref, _MAX_WATCH_RATIO)
    return w


def event_weights(
    kinds: Sequence[str],
    watch_ms: np.ndarray | Sequence[float] | None = None,
    duration_ms: np.ndarray | Sequence[float] | None = None,
    *,
    kind_weights: Mapping[str, float] = DEFAULT_KIND_WEIGHTS,
    watch_time_weight: float = 0.0,
    watch_time_ref_ms: float = 15000.0,
) -> np.ndarray:
    """Vectorised :func:`event_weight`; returns ``float32`` of shape ``(len(kinds),)``.

    Missing watch or duration times are encoded as ``-1`` (any negative) or NaN.
    Inputs are not modified.

    Examples
    --------
    >>> event_weights(["view", "like", "view"], [-1, 0, 15000], watch_time_weight=1.0).tolist()
    [1.0, 3.0, 2.0]
    """
    _check_watch_params(watch_time_weight, watch_time_ref_ms)
    if isinstance(kinds, str):
        raise InvalidInputError("expected a sequence of kinds, got a single string")
    table = {k: float(v) for k, v in kind_weights.items()}
    try:
        w = np.fromiter(map(table.__getitem__, kinds), np.float64, len(kinds))
    except KeyError as e:
        _kind_weight(e.args[0], table)  # raises with a clear message
        raise  # pragma: no cover
    if watch_time_weight and watch_ms is not None:
        t = np.asarray(watch_ms, dtype=np.float64)
        if t.shape != w.shape:
            raise InvalidInputError(f"watch_ms has shape {t.shape}, expected {w.shape}")
        ref = np.full_like(t, watch_time_ref_ms)
        if duration_ms is not None:
            d = np.asarray(duration_ms, dtype=np.float64)
            if d.shape != w.shape:
                raise InvalidInputError(f"duration_ms has shape {d.shape}, expected {w.shape}")
            ref = np.where(d > 0, d, ref)  # NaN > 0 is False
        with np.errstate(invalid="ignore"):
            r = np.where(t >= 0, np.minimum(t / ref, _MAX_WATCH_RATIO), 0.0)
        w *= 1.0 + watch_time_weight * r
    return w.astype(np.float32)
