"""Bayesian personalised ranking matrix factorisation trained by online SGD: the learner :class:`BPRMF`.

This module is the model, its learning and its state in and out (rows, item deltas,
``to_bytes`` / ``from_bytes``). Three parts live apart: :mod:`models.topn`, the exact
pooled top-N search over a large catalog, :mod:`models.tags`, where a new tagged
item starts, and :mod:`models.session`, each user's last events and what they pull
into ranking. Read the class docstring first (the model's maths), then
:meth:`BPRMF.learn_batch` and ``_learn``.

Why one file of about 1,200 lines: it is one class whose methods share its arrays.
About 170 lines are the class docstring, about 230 the learning step (one algorithm,
kept in one place); the rest are short public methods. Splitting the class across
files would scatter its state without making any part shorter to read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import _common as C
from .errors import InvalidInputError, UnknownIdError
from .idmap import IdMap
from .session import STATS_EVERY, Session
from .tags import TagIndex, register_tags, set_tags, tag_prior
from .topn import pooled_top_n

__all__ = ["BPRMF"]

_KIND = "streamrec.models.BPRMF"


def _clip_rows(g: np.ndarray, bound: np.ndarray | float) -> np.ndarray:
    """Scale each row of ``g`` (2-D) in place to L2 norm <= ``bound`` (scalar or one per row)."""
    norm = np.sqrt(np.einsum("bk,bk->b", g, g))
    g *= np.minimum(1.0, bound / np.maximum(norm, 1e-30)).astype(g.dtype)[:, None]
    return g


def _segment_sum(g: np.ndarray, inv: np.ndarray, n: int) -> np.ndarray:
    """``out[r] = g[inv == r].sum(0)`` for a 2-D ``g`` (flat ``np.add.at``, its fast path)."""
    k = g.shape[1]
    out = np.zeros((n, k), g.dtype)
    np.add.at(out.reshape(-1), (inv[:, None] * k + np.arange(k)).ravel(), g.reshape(-1))
    return out


def _scatter_add_rows(out: np.ndarray, rows: np.ndarray, values: np.ndarray, scratch: np.ndarray) -> None:
    """``out[rows[r]] += values[r]`` for every ``r``, repeats accumulating (a 2-D ``np.add.at``).

    Uses the fast 1-D path of ``np.add.at`` on flat indices. Pairs of floats are added as one
    complex number when the row length is even: exactly the same sums, half the indices.
    ``scratch`` is an ``int64`` buffer of at least ``values.size`` elements.
    """
    k = out.shape[1]
    if k % 2 == 0 and out.flags.c_contiguous and values.flags.c_contiguous:
        cdt = np.complex64 if out.dtype == np.float32 else np.complex128
        out, values, k = out.view(cdt), values.view(cdt), k // 2
    flat = scratch[: values.size].reshape(values.shape)
    np.add(np.multiply(rows, k)[:, None], np.arange(k), out=flat)
    np.add.at(out.reshape(-1), flat.reshape(-1), values.reshape(-1))


class BPRMF:
    r"""Implicit-feedback matrix factorisation with item bias, trained online with BPR.

    **Model.** The score of item :math:`i` for user :math:`u` is

    .. math:: \hat{x}_{ui} = \mathbf{p}_u^\top \mathbf{q}_i + b_i .

    **Objective.** An event ``(u, i)`` of weight :math:`w` is paired with
    :math:`m` = ``n_negatives`` items :math:`j` and takes one stochastic
    gradient *ascent* step on

    .. math::

        \ell = \sum_j \ln \sigma(\hat{x}_{ui} - \hat{x}_{uj})
               - \tfrac{\lambda}{2} \Bigl(\lVert\mathbf{p}_u\rVert^2 + \lVert\mathbf{q}_i\rVert^2
               + \sum_j \lVert\mathbf{q}_j\rVert^2 + b_i^2 + \sum_j b_j^2\Bigr).

    **Negatives** (adaptive, "dynamic negative sampling", Zhang et al., SIGIR 2013):
    :math:`m c` items are drawn uniformly from the known items other than
    :math:`i` (:math:`c` = ``negative_candidates``) and the :math:`m` the
    model currently scores highest for :math:`u` are kept. The gradient then
    goes to ranking errors near the top of the list, where uniform negatives
    (``c = 1``, classic BPR) mostly pick items already ranked far below. In
    :meth:`learn_batch` the candidates are scored with the user vectors as
    they were before the batch.

    **Event weights** are relative: with :math:`\tilde w = \min(w, w_{\max})^{\gamma}`
    (:math:`\gamma` = ``weight_exponent``) the step of an event is
    :math:`\eta_e = \eta\, \tilde w / \bar{w}`, where :math:`\bar{w}` is the
    mean :math:`\tilde w` of every event learned so far, this one included.
    Scaling all weights by a constant changes nothing, and :math:`\gamma = 1/2`
    keeps a share (weight 5) worth more than a view (weight 1) without
    letting it take a 5x step.

    **Recency.** Before each of its steps a user's vector decays,
    :math:`\mathbf{p}_u \leftarrow \rho\, \mathbf{p}_u` with
    :math:`\rho = (1 - \delta)\, 2^{-\Delta t / h}`: :math:`\delta` = ``user_decay``
    per event, so a taste is an exponentially weighted memory of about
    :math:`1/\delta` events; optionally :math:`h` = ``user_decay_half_life_s``,
    :math:`\Delta t` being the event time since the user's previous event
    (only when event times are given as ``ts_ms``).

    **Update.** First the user,
    :math:`\mathbf{p}_u \leftarrow e^{-s_u \eta_e \lambda}\, \mathbf{p}_u
    + \operatorname{clip}(s_u \eta_e \nabla_{\mathbf{p}_u})`, then every item row
    along the *updated* :math:`\mathbf{p}_u`,
    :math:`\mathbf{q} \leftarrow e^{-\eta_e \lambda}\, \mathbf{q} + \operatorname{clip}(\eta_e \nabla_{\mathbf{q}})`,
    and the biases likewise with the smaller step :math:`s_b \eta_e`. Here
    :math:`\nabla` is the gradient of the log-likelihood terms of :math:`\ell`, the
    L2 part being applied as the equivalent shrink, and ``clip`` rescales a
    row's update to norm at most :math:`\eta_e g_{\max}` (:math:`s_u \eta_e g_{\max}`
    for users). The gradient sums over the negatives (it is not averaged), so
    the effective step grows with ``n_negatives``.

    **New ids.** Users and items get factors on first sight, drawn from
    :math:`\mathcal{N}(0, \sigma_0^2)`; biases start at 0. A user's draw comes from
    the seeded generator; an item's from a hash of its id and ``seed``
    (:func:`models._common.id_normals`), so every process that meets an item first
    gives it the same vector, whatever else it has seen. An item that arrives with tags (``item_tags=`` / ``tags=`` / :meth:`set_item_tags`)
    starts instead at its tags' prior plus that noise: :meth:`tag_vector`, the
    mean vector and bias of the newest items carrying each tag, averaged over
    its tags. It can then be recommended to the right users before anyone has
    engaged it. Everything is deterministic given ``seed``.

    **The session.** Factors move by small steps, so a user's first lists, and the lists of a
    user whose taste just turned, follow their last few events only slowly. Ranking (not
    learning) therefore adds a *pull* from the user's ``session_events`` most recent events,
    each weighted by its event weight and by :math:`(1 - \text{session\_decay})^{age}`:
    the items other users engaged right before or after them (co-visitation counts kept
    online, ``covisit_neighbours`` per item, :mod:`models.covisit`; ``covisit_weight``) and
    the ``session_tag_items`` highest-bias items of the user's ``session_tags`` strongest recent
    tags (``session_tag_weight``). The score ranked is

    .. math:: \hat{x}_{ui} + s_u\, \Bigl(1 + \frac{\gamma}{n_u}\Bigr) \bigl(\alpha\, c_{ui} + \beta\, t_{ui}\bigr),
              \qquad s_u = \operatorname{std}(b) + \lVert\mathbf{p}_u\rVert\, q_{\mathrm{rms}},

    with :math:`c_{ui}` the co-visitation pull (1 for the user's strongest neighbour),
    :math:`t_{ui}` the lift of the item's tag in the user's recent weight over its share of the
    catalog (a broad tag pulls little), :math:`s_u` the scale of the user's scores and
    :math:`n_u` the user's events learned: the session counts :math:`1 + \gamma` times as much
    after a user's first event (``session_boost``), since their factors know little yet. :meth:`score` and the top-N methods rank the
    same way; the top-N stays exact (the factor top-N plus the session's candidates).
    The session and the counts are in :meth:`to_bytes`, not in the user and item rows.

    :meth:`learn_batch` is the vectorised equivalent of calling :meth:`learn_one`
    per event. A user's events in the batch are applied one after another
    (round :math:`r` holds every user's :math:`r`-th event, at most
    ``max_user_steps`` rounds, the last one summing the rest); item rows are
    updated once for the whole batch, from the item parameters as they were
    before it, each event pushing along its user's vector right after that
    user's step, repeated rows summed (L2 shrinks compounded) and each row's
    total clipped to the largest :math:`\eta_e g_{\max}` among its events. A
    batch of one event is exactly :meth:`learn_one`.

    Parameters
    ----------
    n_factors
        Latent dimension ``k``.
    learning_rate
        :math:`\eta`, the step of an event of average weight.
    regularization
        L2 strength :math:`\lambda`, applied to the rows an event touches.
    n_negatives
        :math:`m`, negatives per event.
    init_std
        :math:`\sigma_0` of the initial factors.
    max_grad_norm
        :math:`g_{\max}`, per-row gradient norm cap (the update is at most
        :math:`\eta_e g_{\max}` long).
    seed
        Seed of the generator used for initialisation and negative sampling.
    dtype
        ``numpy.float32`` (default) or ``numpy.float64``.
    max_weight
        :math:`w_{\max}`: event weights above it count as ``max_weight`` (default 5, a share).
    bias_lr_scale
        :math:`s_b`, the item-bias step relative to :math:`\eta_e`.
    max_user_steps
        Most sequential steps a user takes in one :meth:`learn_batch` call.
    negative_candidates
        :math:`c`, uniform draws per kept negative; 1 is plain uniform sampling.
    weight_exponent
        :math:`\gamma`, how much event weights count (0 ignores them, 1 is linear).
    normalize_weights
        Divide by :math:`\bar{w}` (default); if False the step is :math:`\eta \tilde w`.
    user_lr_scale
        :math:`s_u`, the user step relative to :math:`\eta_e`.
    user_decay
        :math:`\delta`, the share of a user's vector forgotten at each of their events.
    user_decay_half_life_s
        :math:`h`, seconds of event time, or ``None`` (default) for no time decay.
    tag_init
        Whether new items with tags start at their tags' prior (default) or as noise.
    pooled_search_min_items
        Catalog size from which :meth:`top_n_lists` uses the pooled exact search
        (below it, brute force; ``None``: always brute force).
    pool_size
        Items in the shared candidate pool of the pooled search.
    track_item_deltas
        Keep the sum of learning's changes to each item row (factors and bias) until
        :meth:`take_item_deltas`, and the co-visit pairs it counts until :meth:`take_covisit_deltas`:
        what a worker sends to the others that share the items.
    covisit_weight
        :math:`\alpha`, the pull of co-visited items (0 turns the counts off).
    covisit_neighbours
        Co-visited items kept per item (8 bytes each).
    covisit_window
        An event counts as co-visited with the user's previous this many events.
    covisit_candidates
        Neighbours (the strongest) each recent item brings as candidates.
    session_events
        Recent events per user the session is made of.
    session_decay
        How much less each older recent event counts.
    session_tag_weight
        :math:`\beta`, the pull of the user's recent tags (0 turns it off).
    session_tags, session_tag_items
        How many of the user's recent tags pull, and how many items of each.
    session_boost
        :math:`\gamma`: the pull of a user with :math:`n` events learned is :math:`1 + \gamma / n`
        times the above (0: the same for everyone).

    Notes
    -----
    The learning defaults were chosen on the *first half* of a prequential pass over
    MovieLens-100k (:func:`models.evaluate.prequential`: events in time order,
    each tested then learned with :meth:`learn_one`, weights view 1 / like 3 /
    share 5), then checked on the second half and on a synthetic stream.
    HR@10 of the factors alone (the session off): 0.166 on the first half, 0.171 on
    the whole stream, 0.175 on the second half; all-time popularity scores 0.072 and
    plain BPR (uniform negatives, linear weights, no decay) 0.096
    (0.147 with unit weights, where these defaults reach 0.178). The gains
    come from adaptive negatives, the per-event user decay and relative,
    square-rooted weights. The session's defaults were chosen on the whole
    stream (a coarse grid) and on binges of a synthetic world: 0.188 with it.

    Examples
    --------
    >>> model = BPRMF(n_factors=8, seed=42)
    >>> for _ in range(100):
    ...     model.learn_batch(["ann", "ann", "bob", "bob"], ["jazz", "blues", "metal", "punk"])
    >>> sorted(item for item, _ in model.top_n("ann", 2))
    ['blues', 'jazz']
    >>> [item for item, _ in model.top_n("bob", 3, exclude=["metal"])][0]
    'punk'
    >>> model.n_users, model.n_items
    (2, 4)

    An item nobody has engaged yet, tagged like ann's favourites, starts next to them:

    >>> model.set_item_tags(["jazz", "blues", "metal", "punk"], [["swing"], ["swing"], ["loud"], ["loud"]])
    >>> model.set_item_tags(["bebop"], [["swing"]])
    >>> [item for item, _ in model.top_n("ann", 1, exclude=["jazz", "blues"])]
    ['bebop']
    """

    def __init__(
        self,
        n_factors: int = 32,
        learning_rate: float = 0.075,
        regularization: float = 0.01,
        n_negatives: int = 10,
        init_std: float = 0.03,
        max_grad_norm: float = 10.0,
        seed: int | None = 0,
        dtype: type[np.floating[Any]] | np.dtype[Any] | str = np.float32,
        *,
        max_weight: float = 5.0,
        bias_lr_scale: float = 0.1,
        max_user_steps: int = 128,
        negative_candidates: int = 2,
        weight_exponent: float = 0.5,
        normalize_weights: bool = True,
        user_lr_scale: float = 0.5,
        user_decay: float = 0.03,
        user_decay_half_life_s: float | None = None,
        tag_init: bool = True,
        pooled_search_min_items: int | None = 4096,
        pool_size: int = 1024,
        track_item_deltas: bool = False,
        covisit_weight: float = 0.5,
        covisit_neighbours: int = 64,
        covisit_window: int = 2,
        covisit_candidates: int = 16,
        session_events: int = 8,
        session_decay: float = 0.3,
        session_tag_weight: float = 1.0,
        session_tags: int = 2,
        session_tag_items: int = 25,
        session_boost: float = 4.0,
    ) -> None:
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise InvalidInputError(f"dtype must be float32 or float64, got {dt}")
        checks = {
            "n_factors": int(n_factors) == n_factors and n_factors >= 1,
            "learning_rate": learning_rate > 0,
            "regularization": regularization >= 0,
            "n_negatives": int(n_negatives) == n_negatives and n_negatives >= 0,
            "init_std": init_std >= 0,
            "max_grad_norm": max_grad_norm > 0,
            "max_weight": max_weight > 0,
            "bias_lr_scale": bias_lr_scale >= 0,
            "max_user_steps": int(max_user_steps) == max_user_steps and max_user_steps >= 1,
            "negative_candidates": int(negative_candidates) == negative_candidates and negative_candidates >= 1,
            "weight_exponent": weight_exponent >= 0,
            "user_lr_scale": user_lr_scale > 0,
            "user_decay": 0 <= user_decay < 1,
            "user_decay_half_life_s": user_decay_half_life_s is None or user_decay_half_life_s > 0,
            "session_boost": session_boost >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise InvalidInputError(f"invalid {name}: {locals()[name]!r}")
        self.n_factors = int(n_factors)
        self.learning_rate = float(learning_rate)
        self.regularization = float(regularization)
        self.n_negatives = int(n_negatives)
        self.init_std = float(init_std)
        self.max_grad_norm = float(max_grad_norm)
        self.seed = seed
        self.dtype = dt
        self.max_weight = float(max_weight)
        self.bias_lr_scale = float(bias_lr_scale)
        self.max_user_steps = int(max_user_steps)
        self.negative_candidates = int(negative_candidates)
        self.weight_exponent = float(weight_exponent)
        self.normalize_weights = bool(normalize_weights)
        self.user_lr_scale = float(user_lr_scale)
        self.user_decay = float(user_decay)
        self.user_decay_half_life_s = None if user_decay_half_life_s is None else float(user_decay_half_life_s)
        self.tag_init = bool(tag_init)
        self.pooled_search_min_items = pooled_search_min_items
        self.pool_size = int(pool_size)
        self.track_item_deltas = bool(track_item_deltas)
        #: Each user's last events, the co-visitation counts and the pull they give ranking (models.session)
        self.session = Session(
            covisit_weight, covisit_neighbours, covisit_window, covisit_candidates, session_events, session_decay,
            session_tag_weight, session_tags, session_tag_items, session_boost, dt, self.track_item_deltas,
        )
        self._learn_calls = 0
        self._item_scale: tuple[int, float, float] | None = None  # (learn call, std of biases, rms item norm)
        self._rng = np.random.default_rng(seed)
        self._users = IdMap()
        self._items = IdMap()
        self._U = np.zeros((0, self.n_factors), dt)
        self._V = np.zeros((0, self.n_factors), dt)
        self._b = np.zeros(0, dt)
        self._last_ms = np.zeros(0)  # per user: time of the latest event learned (NaN: none)
        self._w_sum = 0.0  # sum and count of the (capped, exponentiated) weights learned
        self._w_count = 0
        self._tags = TagIndex()
        self._lut = np.empty(0, np.int64)  # scratch for _unique_items
        self._work: dict[str, np.ndarray] = {}  # reused scratch buffers of the batch update
        # Learning's own change to each item row since the last take_item_deltas (when tracked)
        self._dV = np.zeros((0, self.n_factors), dt)
        self._db = np.zeros(0, dt)
        self._dmask = np.zeros(0, bool)

    @property
    def covisit_candidates(self) -> int:
        """Co-visited items each recent item brings to ranking (its strongest): what an item snapshot keeps."""
        return self.session.covisit_candidates

    # ------------------------------------------------------------------ ids
    @property
    def n_users(self) -> int:
        """Number of known users."""
        return len(self._users)

    @property
    def n_items(self) -> int:
        """Number of known items."""
        return len(self._items)

    @property
    def user_ids(self) -> list[str]:
        """Known user ids in index order (a copy)."""
        return self._users.ids

    @property
    def item_ids(self) -> list[str]:
        """Known item ids in index order (a copy)."""
        return self._items.ids

    def has_user(self, user: str) -> bool:
        """Whether ``user`` has factors."""
        return user in self._users

    def has_item(self, item: str) -> bool:
        """Whether ``item`` has factors."""
        return item in self._items

    def _init_rows(self, a: np.ndarray, lo: int, hi: int) -> np.ndarray:
        a = C.grow_rows(a, hi)
        if hi > lo:
            r = self._rng.standard_normal((hi - lo, self.n_factors), dtype=self.dtype)
            a[lo:hi] = r * self.dtype.type(self.init_std)
        return a

    def _index_users(self, users: Sequence[str], init: bool = True) -> np.ndarray:
        lo = len(self._users)
        u = self._users.index(users)
        if init:
            self._U = self._init_rows(self._U, lo, len(self._users))
        else:
            self._U = C.grow_rows(self._U, len(self._users))
        self.session.grow_users(len(self._U))
        if len(self._last_ms) < len(self._U):
            last = np.full(len(self._U), np.nan)
            last[: len(self._last_ms)] = self._last_ms
            self._last_ms = last
        return u

    def _index_items(
        self, items: Sequence[str], init: bool = True, tags: Sequence[Iterable[str] | None] | None = None
    ) -> np.ndarray:
        lo = len(self._items)
        i = self._items.index(items)
        hi = len(self._items)
        self._V = C.grow_rows(self._V, hi)
        if init and hi > lo:
            # Drawn from the id, not the generator: every process starts an item at the same vector.
            noise = C.id_normals(self._items._ids[lo:hi], self.n_factors, self.seed)
            self._V[lo:hi] = (noise * self.init_std).astype(self.dtype)
        self._b = C.grow_rows(self._b, hi)
        if self.track_item_deltas:
            self._dV, self._db, self._dmask = C.grow_rows(self._dV, hi), C.grow_rows(self._db, hi), C.grow_rows(self._dmask, hi)
        self._tags.grow(len(self._items))
        self.session.grow_items(hi)
        if tags is not None:  # new items start at their tags' prior (see models.tags)
            register_tags(self._tags, self._V, self._b, i, tags, lo if init else hi, self.tag_init)
        return i

    def _known(self, idmap: IdMap, ids: Sequence[str], what: str) -> np.ndarray:
        C.check_ids(ids, what + "s")
        idx = idmap.lookup(ids)
        if (idx < 0).any():
            missing = [ids[r] for r in np.flatnonzero(idx < 0)[:5]]
            raise UnknownIdError(f"unknown {what}(s): {missing!r}")
        return idx

    def add_items(self, items: Sequence[str], tags: Sequence[Iterable[str] | None] | None = None) -> list[str]:
        """Create the unknown ones of ``items`` as :meth:`learn_batch` would; returns them, first seen first.

        Known items are left as they are. ``tags[r]`` (optional) belongs to ``items[r]``:
        a new item with tags starts at their prior (see the class docstring).

        >>> model = BPRMF(n_factors=4)
        >>> model.add_items(["a", "b", "a"]), model.add_items(["b", "c"])
        (['a', 'b'], ['c'])
        """
        C.check_ids(items, "items")
        if tags is not None:
            C.check_tag_lists(tags, len(items))
        lo = len(self._items)
        self._index_items(items, tags=tags)
        return self._items._ids[lo:]

    def item_index(self, items: Sequence[str]) -> np.ndarray:
        """The indices of ``items`` (``-1`` for unknown ones). Items are numbered 0, 1, 2, ... in the
        order they were created; an item's index never changes.

        >>> model = BPRMF(n_factors=2)
        >>> model.add_items(["a", "b"])
        ['a', 'b']
        >>> model.item_index(["b", "zz"]).tolist(), model.item_ids_at(np.array([1, 0]))
        ([1, -1], ['b', 'a'])
        """
        C.check_ids(items, "items")
        return self._items.lookup(items)

    def item_ids_at(self, indices: np.ndarray) -> list[str]:
        """The ids of the items at ``indices`` (see :meth:`item_index`)."""
        ids: list[str] = self._items._array()[np.asarray(indices, dtype=np.int64)].tolist()
        return ids

    def take_item_deltas(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What learning changed since the last call: item indices, factor deltas ``(n, k)``, bias deltas ``(n,)``.

        Only with ``track_item_deltas=True`` (else nothing is recorded). The rows are the
        sums of every batch's change to them; taking them resets the sums to zero.

        >>> model = BPRMF(n_factors=2, track_item_deltas=True)
        >>> model.learn_batch(["u"], ["a"])  # one known item: nothing to learn from yet
        >>> model.learn_batch(["u", "u"], ["b", "a"])
        >>> indices, dv, db = model.take_item_deltas()
        >>> sorted(model.item_ids_at(indices)), dv.shape, len(model.take_item_deltas()[0])
        (['a', 'b'], (2, 2), 0)
        """
        n = len(self._items)
        rows = np.flatnonzero(self._dmask[:n])
        dv, db = self._dV[rows], self._db[rows]
        self._dV[rows] = 0
        self._db[rows] = 0
        self._dmask[rows] = False
        return rows, dv, db

    def peek_item_deltas(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The changes :meth:`take_item_deltas` would return for the items at ``indices`` (zeros where none)."""
        i = np.asarray(indices, dtype=np.int64)
        if not self.track_item_deltas:
            return np.zeros((len(i), self.n_factors), self.dtype), np.zeros(len(i), self.dtype)
        return self._dV[i], self._db[i]

    def add_item_deltas(
        self, indices: np.ndarray, vectors: np.ndarray, biases: np.ndarray, *, unique: bool = False
    ) -> None:
        """Add ``vectors`` (``(n, k)``) and ``biases`` (``(n,)``) to the items at ``indices`` (repeats add up;
        ``unique=True`` promises there are none: a plain indexed add, faster).

        How another learner's changes are merged in: they are not recorded as this model's own.

        >>> model = BPRMF(n_factors=2, init_std=0.0)
        >>> model.set_item_vectors(["a"], np.array([[1.0, 2.0]]), np.array([0.5]))
        >>> model.add_item_deltas(model.item_index(["a"]), np.array([[0.5, -1.0]]), np.array([0.25]))
        >>> [v.tolist() for v in model.item_vectors(["a"])]
        [[[1.5, 1.0]], [0.75]]
        """
        i = np.asarray(indices, dtype=np.int64)
        if len(i) and not (0 <= i.min() and i.max() < len(self._items)):
            raise UnknownIdError("item indices out of range")
        v = np.asarray(vectors, dtype=self.dtype)
        bias = np.asarray(biases, dtype=self.dtype)
        if v.shape != (len(i), self.n_factors) or bias.shape != (len(i),):
            raise InvalidInputError(f"expected ({len(i)}, {self.n_factors}) vectors and ({len(i)},) biases")
        if not (np.isfinite(v).all() and np.isfinite(bias).all()):
            raise InvalidInputError("item deltas must be finite")
        if unique:
            self._V[i] += v
            self._b[i] += bias
        elif len(i):
            _scatter_add_rows(self._V, i, np.ascontiguousarray(v), self._buffer("flat", (v.size,), np.dtype(np.int64)))
            np.add.at(self._b, i, bias)

    def take_covisit_deltas(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The co-visit pairs learning counted since the last call: source rows, destination rows, counts.

        Only with ``track_item_deltas=True`` (else nothing is recorded). One row per pair
        (``src -> dst``, one direction each; an event counts both), its counts summed; what another
        learner counts this way, :meth:`add_covisit_counts` merges in. Taking them resets the sums.

        >>> model = BPRMF(n_factors=2, track_item_deltas=True)
        >>> model.learn_batch(["u", "u", "u"], ["a", "b", "a"])  # a-b, then b-a: the pair twice
        >>> src, dst, counts = model.take_covisit_deltas()
        >>> sorted(zip(model.item_ids_at(src), model.item_ids_at(dst), counts.tolist()))
        [('a', 'b', 2.0), ('b', 'a', 2.0)]
        >>> len(model.take_covisit_deltas()[0])
        0
        """
        return self.session.take_pairs()

    def add_covisit_counts(self, src_rows: np.ndarray, dst_rows: np.ndarray, counts: np.ndarray) -> None:
        """Count ``counts[e]`` co-visits of the items at ``src_rows[e] -> dst_rows[e]`` (one direction each).

        How another learner's :meth:`take_covisit_deltas` are merged in: they are not recorded as
        this model's own. Pairs of an item with itself are skipped; with ``covisit_weight=0`` (no
        table) nothing is counted.

        >>> model = BPRMF(n_factors=2, seed=0)
        >>> model.add_items(["a", "b", "c"])
        ['a', 'b', 'c']
        >>> model.learn_batch(["u"], ["a"])
        >>> before = model.score("u")
        >>> model.add_covisit_counts(model.item_index(["a"]), model.item_index(["c"]), np.array([3.0]))
        >>> [item for item, gain in zip(model.item_ids, model.score("u") - before) if gain > 0]
        ['c']
        """
        src, dst = np.asarray(src_rows, dtype=np.int64), np.asarray(dst_rows, dtype=np.int64)
        w = np.asarray(counts, dtype=np.float64)
        if src.shape != dst.shape or w.shape != src.shape or src.ndim != 1:
            raise InvalidInputError(f"expected three arrays of one length, got {src.shape}, {dst.shape}, {w.shape}")
        if len(src) and not (min(src.min(), dst.min()) >= 0 and max(src.max(), dst.max()) < len(self._items)):
            raise UnknownIdError("item indices out of range")
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise InvalidInputError("co-visit counts must be finite and >= 0")
        keep = (src != dst) & (w > 0)
        if self.session.covisit_weight and keep.any():
            self.session.covisit.add(src[keep], dst[keep], w[keep])

    def peek_covisit_deltas(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs :meth:`take_covisit_deltas` would return now, without taking them (subtracted from an
        item snapshot: this model's own counts not published yet).

        >>> model = BPRMF(n_factors=2, track_item_deltas=True)
        >>> model.learn_batch(["u", "u"], ["a", "b"])
        >>> [len(a) for a in model.peek_covisit_deltas()], [len(a) for a in model.take_covisit_deltas()]
        ([2, 2, 2], [2, 2, 2])
        """
        return self.session.peek_pairs()

    def covisit_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The co-visit neighbours of the items at ``indices``: neighbour indices ``(n, covisit_neighbours)``
        (-1: empty slot) and their counts, in the table's slot order (copies).

        >>> model = BPRMF(n_factors=2)
        >>> model.learn_batch(["u", "u"], ["a", "b"])
        >>> neighbours, counts = model.covisit_rows(model.item_index(["a"]))
        >>> model.item_ids_at(neighbours[counts > 0]), counts[counts > 0].tolist()
        (['b'], [1.0])
        """
        i = np.asarray(indices, dtype=np.int64)
        if len(i) and not (0 <= i.min() and i.max() < len(self._items)):
            raise UnknownIdError("item indices out of range")
        return self.session.covisit.nbr[i].astype(np.int64), self.session.covisit.cnt[i].copy()

    def set_covisit_rows(self, rows: np.ndarray, neighbour_rows: np.ndarray, counts: np.ndarray) -> None:
        """Replace the co-visit neighbours of the items at ``rows`` (``(n,)``) by ``neighbour_rows`` (``(n, m)``
        distinct item indices per row, -1 for none) with their ``counts``: how an item snapshot restores them.

        At most ``covisit_neighbours`` per item are kept (the strongest); pairs of an item with itself and
        counts of 0 are left out; with ``covisit_weight=0`` (no table) nothing is set. Not recorded as this
        model's own counts.

        >>> model = BPRMF(n_factors=2)
        >>> _ = model.add_items(["a", "b", "c"])
        >>> model.set_covisit_rows(model.item_index(["a"]), np.array([[2, 1]]), np.array([[3.0, 1.0]]))
        >>> model.covisit_rows(model.item_index(["a"]))[1][0, :3].tolist()
        [3.0, 1.0, 0.0]
        """
        r = np.asarray(rows, dtype=np.int64)
        nbr = np.asarray(neighbour_rows, dtype=np.int64)
        w = np.asarray(counts, dtype=np.float32)
        if r.ndim != 1 or nbr.ndim != 2 or nbr.shape[0] != len(r) or w.shape != nbr.shape:
            raise InvalidInputError(f"expected (n,) rows and (n, m) neighbours and counts, got {r.shape}, "
                                    f"{nbr.shape}, {w.shape}")
        n = len(self._items)
        if len(r) and not (0 <= r.min() and r.max() < n and nbr.max(initial=-1) < n and nbr.min(initial=0) >= -1):
            raise UnknownIdError("item indices out of range")
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise InvalidInputError("co-visit counts must be finite and >= 0")
        if self.session.covisit_weight and len(r):
            self.session.covisit.set_rows(r, np.where(nbr == r[:, None], -1, nbr), w)

    # ------------------------------------------------------------------ tags
    def set_item_tags(self, items: Sequence[str], tags: Sequence[Iterable[str] | None]) -> None:
        """Set (replace) the tags of ``items``; ``tags[r]`` belongs to ``items[r]``.

        Unknown items are created as if first seen in an event: with noise
        drawn from a hash of their id (the same on every worker), plus their tags' prior (:meth:`tag_vector`,
        computed before any of them joins a tag) when ``tag_init`` is on.
        Known items keep their factors; only the tag index changes, which
        shapes the priors of later items. An empty list untags an item.
        """
        C.check_ids(items, "items")
        C.check_tag_lists(tags, len(items))
        lo = len(self._items)
        i = self._index_items(items)
        set_tags(self._tags, self._V, self._b, i, [C.tag_tuple(t) for t in tags], lo, self.tag_init)

    def item_tags(self, item: str) -> tuple[str, ...]:
        """The tags of ``item`` (``()`` if it has none or is unknown)."""
        return self._tags.names(self._items.get(item))

    def tag_vector(self, tags: Iterable[str]) -> tuple[np.ndarray, float]:
        """The prior of an item with ``tags``: factor vector ``(k,)`` and bias.

        For each known tag, the mean vector and mean bias of its newest (at
        most 256) items; then the mean over those tags. Unknown tags are
        ignored; with none known the result is the zero vector and 0, a fresh
        item's expected parameters.

        >>> m = BPRMF(n_factors=2, init_std=0.0)
        >>> m.set_item_vectors(["a", "b", "c"], [[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]], [1.0, 3.0, 0.0])
        >>> m.set_item_tags(["a", "b", "c"], [["rock"], ["rock"], ["pop"]])
        >>> m.tag_vector(["rock"])
        (array([2., 0.], dtype=float32), 2.0)
        >>> m.tag_vector(["rock", "pop", "unknown"])[0].tolist()
        [1.0, 2.5]
        """
        return tag_prior(self._tags, self._V, self._b, C.tag_tuple(tags))

    # ------------------------------------------------------------- learning
    def learn_one(
        self,
        user: str,
        item: str,
        weight: float = 1.0,
        *,
        tags: Iterable[str] | None = None,
        ts_ms: float | None = None,
    ) -> None:
        """Learn from one positive event; same as :meth:`learn_batch` on a batch of one.

        ``tags`` are the item's tags (used if the item has none yet), ``ts_ms``
        the event time in milliseconds (used by ``user_decay_half_life_s``).
        """
        w = C.check_weight(weight)
        t = None if ts_ms is None else self._times([ts_ms], 1)
        u = self._index_users([user])
        self._learn(u, self._index_items([item], tags=None if tags is None else [tags]), np.array([w]), t)

    def learn_batch(
        self,
        users: Sequence[str],
        items: Sequence[str],
        weights: np.ndarray | Sequence[float] | None = None,
        *,
        item_tags: Sequence[Iterable[str] | None] | None = None,
        ts_ms: np.ndarray | Sequence[float] | None = None,
        update_items: np.ndarray | Sequence[bool] | None = None,
    ) -> None:
        """Learn from a batch of positive events ``(users[e], items[e], weights[e])``.

        The vectorised hot path: ids are indexed (new ones initialised) first,
        all negatives are sampled at once, users step once per round (see the
        class docstring) and every item row is updated once, repeated rows
        accumulating. ``weights`` defaults to ones; zero-weight events only
        register their ids. ``item_tags[e]`` (optional) are the tags of
        ``items[e]``: items without tags yet take the first non-empty ones,
        and new items start at their tags' prior. ``ts_ms`` (optional) are
        event times in milliseconds, used by ``user_decay_half_life_s``.
        ``update_items`` (optional, one bool per event): events marked False
        move only their user's vector, not the items (whose change from them
        is already known, e.g. merged from another learner). Inputs are not
        modified.
        """
        C.check_pairs(users, items)
        w = C.as_weights(weights, len(users))
        if item_tags is not None:
            C.check_tag_lists(item_tags, len(items))
        t = None if ts_ms is None else self._times(ts_ms, len(users))
        mask = None
        if update_items is not None:
            mask = np.asarray(update_items, dtype=bool)
            if mask.shape != (len(users),):
                raise InvalidInputError(f"update_items must hold one bool per event, got shape {mask.shape}")
            mask = None if mask.all() else mask
        u = self._index_users(users)
        self._learn(u, self._index_items(items, tags=item_tags), w, t, mask)

    @staticmethod
    def _times(ts_ms: np.ndarray | Sequence[float], n: int) -> np.ndarray:
        t = np.array(ts_ms, dtype=np.float64)
        if t.shape != (n,) or not np.isfinite(t).all():
            raise InvalidInputError(f"ts_ms must be finite with shape ({n},)")
        return t

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """A reusable scratch array (contents undefined): fresh large temporaries page-fault on every batch."""
        size = math.prod(shape)
        buf = self._work.get(name)
        if buf is None or len(buf) < size or buf.dtype != dtype:
            buf = self._work[name] = np.empty(max(size, 2 * (0 if buf is None else len(buf))), dtype)
        return buf[:size].reshape(shape)

    def _learn(
        self, u: np.ndarray, i: np.ndarray, w: np.ndarray, t: np.ndarray | None, items_move: np.ndarray | None = None
    ) -> None:
        n, m, k = len(self._items), self.n_negatives, self.n_factors
        if not (w > 0).all():  # zero-weight events only register their ids
            keep = w > 0
            u, i, w = u[keep], i[keep], w[keep]
            t = None if t is None else t[keep]
            items_move = None if items_move is None else items_move[keep]
        # relative event weights (they also weigh the session's recent events)
        ws = np.minimum(w, self.max_weight)
        if self.weight_exponent != 1.0:
            ws **= self.weight_exponent
        # each event's number among its user's events of the batch, users side by side
        by_user = np.argsort(u, kind="stable")
        ranked = C.run_ranks(u[by_user])
        self.session.remember(u, i, ws, by_user, ranked, items_move)
        self._learn_calls += 1
        if n < 2 or m == 0 or len(u) == 0:
            return
        dt, reg, cap, B, m1 = self.dtype, self.dtype.type(self.regularization), self.max_grad_norm, len(u), m + 1
        # relative event weights -> steps
        eta = self.learning_rate
        if self.normalize_weights:
            self._w_sum += float(ws.sum())
            self._w_count += B
            eta *= self._w_count / self._w_sum
        lr = (ws * eta).astype(dt)
        # Rounds: the r-th event of each user goes to round r (the last round takes the rest),
        # so a user's events are applied one after another, as learn_one would.
        rank = None
        cuts = [0, B]
        if ranked.any():
            rank = np.empty(B, np.int64)
            rank[by_user] = np.minimum(ranked, self.max_user_steps - 1)
            order = np.argsort(rank, kind="stable")
            u, i, lr, rank = u[order], i[order], lr[order], rank[order]
            t = None if t is None else t[order]
            items_move = None if items_move is None else items_move[order]
            cuts = [0, *np.flatnonzero(rank[1:] != rank[:-1]) + 1, B]
        capped = rank is not None and rank[-1] == self.max_user_steps - 1
        decay = self._decay(u, t)
        U, V, b = self._U, self._V, self._b
        J = np.empty((B, m1), np.int64)  # column 0 the positive, then the negatives
        J[:, 0] = i
        J[:, 1:] = self._negatives(u, i)
        Q = self._buffer("Q", (B, m1, k), dt)  # item snapshot: column 0 the positive, then the negatives
        np.take(V, J, axis=0, out=Q, mode="clip")
        bq = b.take(J)
        # G[e] = -2 d l / d x: column 0 for the positive (-sum_j 2 sigma_j), then 2 sigma_j for each
        # negative, with sigma_j = sigma(x_uj - x_ui) = (1 + tanh((x_uj - x_ui) / 2)) / 2
        G = np.empty((B, m1), dt)
        lr_u = lr * dt.type(self.user_lr_scale)
        step_scale = lr_u * dt.type(-0.5)  # turns G @ Q into the step lr_u * dl/dp (before L2)
        l2_keep = np.exp(-lr_u * reg)  # L2 as a shrink of the (decayed) vector, outside the clipped step
        bound2 = np.square(lr_u * cap)
        P = self._buffer("P", (B, k), dt)  # each event's user vector after its step
        # 1) users: one SGD step per round
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            us, Qr, g = u[lo:hi], Q[lo:hi], G[lo:hi]
            p = U.take(us, 0)
            if decay is not None:
                p *= decay[lo:hi, None]
            np.matmul(Qr, p[:, :, None], out=g[:, :, None])
            g += bq[lo:hi]
            gn = g[:, 1:]
            gn -= g[:, :1]
            gn *= 0.5
            np.tanh(gn, out=gn)
            gn += 1.0
            np.sum(gn, axis=1, out=g[:, 0])
            g[:, 0] *= -1.0
            step = np.matmul(g[:, None, :], Qr)[:, 0, :]
            step *= step_scale[lo:hi, None]
            if capped and hi == B:  # the capped last round: a user's remaining events summed
                uniq, inv = np.unique(us, return_inverse=True)
                shrink = np.ones(len(uniq), dt)
                np.multiply.at(shrink, inv, l2_keep[lo:hi] if decay is None else decay[lo:hi] * l2_keep[lo:hi])
                bound = np.zeros(len(uniq), dt)
                np.maximum.at(bound, inv, lr_u[lo:hi] * cap)
                U[uniq] = U[uniq] * shrink[:, None] + _clip_rows(_segment_sum(step, inv, len(uniq)), bound)
                P[lo:hi] = U.take(us, 0)
            else:
                norm2 = np.einsum("bk,bk->b", step, step)
                if (norm2 > bound2[lo:hi]).any():
                    step *= np.sqrt(np.minimum(1.0, bound2[lo:hi] / np.maximum(norm2, 1e-30)))[:, None]
                p *= l2_keep[lo:hi, None]
                p += step
                U[us] = p
                P[lo:hi] = p
        # 2) items, along the users' updated vectors: row J[e, c] moves by lr_e * dl/dx_ec * p_e
        if items_move is not None:  # events whose item side is known already move nothing here
            lr = lr * items_move
        G *= (lr * dt.type(-0.5))[:, None]  # lr_e * dl/dx
        uniq, inv = self._unique_items(J.reshape(-1))
        nu = len(uniq)
        step = np.zeros((nu, k), dt)
        contrib = self._buffer("contrib", (B, m1, k), dt)
        np.multiply(G[:, :, None], P[:, None, :], out=contrib)
        _scatter_add_rows(step, inv, contrib.reshape(B * m1, k), self._buffer("flat", (B * m1 * k,), np.dtype(np.int64)))
        lr_rows = np.repeat(lr, m1)
        lr_sum = np.bincount(inv, lr_rows, nu)
        bound = np.zeros(nu, dt)
        np.maximum.at(bound, inv, lr_rows * cap)
        # L2 as the shrink the row's events would apply one after another, then the clipped step
        old = V.take(uniq, 0)
        vq = old * np.exp(-self.regularization * lr_sum).astype(dt)[:, None]
        vq += _clip_rows(step, bound)
        V[uniq] = vq
        # 3) item biases, same gradients with a smaller step
        sb = self.bias_lr_scale
        old_b = b.take(uniq)
        vb = old_b * np.exp(-self.regularization * sb * lr_sum).astype(dt)
        vb += np.clip(np.bincount(inv, G.reshape(-1), nu).astype(dt) * dt.type(sb), -bound * sb, bound * sb)
        b[uniq] = vb
        if self.track_item_deltas:
            vq -= old
            self._dV[uniq] += vq
            vb -= old_b
            self._db[uniq] += vb
            self._dmask[uniq] = True

    def _negatives(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """``(B, m)`` negatives: the ``m`` best-scored for the user of ``m * c`` uniform draws among
        the known items other than the positive (scored with the current user vectors)."""
        n, m, c = len(self._items), self.n_negatives, self.negative_candidates
        j = self._rng.integers(0, n - 1, size=(len(u), m * c))
        j += j >= i[:, None]
        if c == 1:
            return j
        cand = self._buffer("cand", (len(u), m * c, self.n_factors), self.dtype)
        np.take(self._V, j, axis=0, out=cand, mode="clip")  # mode="raise" would buffer the output
        s = np.matmul(cand, self._U.take(u, 0)[:, :, None])[..., 0]
        s += self._b.take(j)
        return np.take_along_axis(j, np.argpartition(s, m * c - m, axis=1)[:, m * c - m :], 1)

    def _decay(self, u: np.ndarray, t: np.ndarray | None) -> np.ndarray | None:
        """Per event (in processing order), the factor applied to the user's vector before its step."""
        decay = None
        if self.user_decay > 0:
            decay = np.full(len(u), 1.0 - self.user_decay)
        if self.user_decay_half_life_s is not None and t is not None:
            # time since the user's previous event: earlier in this batch, else the last one learned
            order = np.lexsort((np.arange(len(u)), u))
            su, st = u[order], t[order]
            prev = np.empty(len(u))
            prev[1:] = st[:-1]
            first = np.ones(len(u), bool)
            first[1:] = su[1:] != su[:-1]
            prev[first] = self._last_ms[su[first]]
            gap = np.zeros(len(u))
            gap[order] = np.nan_to_num(st - prev, nan=0.0)  # a user's first event: no decay
            f = np.exp2(-np.maximum(gap, 0.0) / (self.user_decay_half_life_s * 1000.0))
            decay = f if decay is None else decay * f
            np.fmax.at(self._last_ms, u, t)
        return None if decay is None else decay.astype(self.dtype)

    def _unique_items(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(uniq, inv)`` with ``uniq[inv] == rows``, in O(len(rows)) via a scratch lookup table."""
        if len(self._lut) < len(self._V):
            self._lut = np.empty(len(self._V), np.int64)
        lut, pos = self._lut, np.arange(len(rows))
        lut[rows] = pos  # with repeats, one (any) position per row survives
        uniq = rows[lut[rows] == pos]
        lut[uniq] = np.arange(len(uniq))
        return uniq, lut[rows]

    # -------------------------------------------------------------- scoring
    def score(self, user: str, items: Sequence[str] | None = None) -> np.ndarray:
        """Scores of ``items`` (all known items, in index order, if None) for ``user``.

        Unknown items score 0, the expected score of a freshly initialised item.

        Raises
        ------
        UnknownIdError
            (a :class:`~models.errors.ModelError` and :class:`KeyError`) if ``user`` is unknown.
        """
        u = self._users.get(user)
        if u is None:
            raise UnknownIdError(f"unknown user {user!r}")
        p, n = self._U[u], len(self._items)
        session = self.session.active
        if items is None or session:
            scores: np.ndarray = self._V[:n] @ p + self._b[:n]
            if session:
                self._add_pull(np.array([u]), scores[None, :])
            if items is None:
                return scores
        idx = self._items.lookup(items)
        out = np.zeros(len(idx), self.dtype)
        k = idx >= 0
        out[k] = scores[idx[k]] if session else self._V[idx[k]] @ p + self._b[idx[k]]
        return out

    def top_n(self, user: str, n: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The ``n`` best ``(item, score)`` for ``user``, best first, never an excluded item.

        Returns fewer than ``n`` when fewer items remain. Raises
        :class:`~models.errors.UnknownIdError` for an unknown user.
        """
        if user not in self._users:
            raise UnknownIdError(f"unknown user {user!r}")
        return self.top_n_batch([user], n, [exclude])[0]

    def top_n_batch(
        self, users: Sequence[str], n: int, exclude: Sequence[Iterable[str]] | None = None
    ) -> list[list[tuple[str, float]]]:
        """:meth:`top_n` for many users; ``[]`` for unknown users. Same ranking as :meth:`top_n_lists`."""
        ids, scores = self.top_n_lists(users, n, exclude)
        return [list(zip(a, s)) for a, s in zip(ids, scores)]

    def top_n_lists(
        self, users: Sequence[str], n: int, exclude: Sequence[Iterable[str]] | None = None
    ) -> tuple[list[list[str]], list[list[float]]]:
        """Top-``n`` of many users as two aligned lists: item ids and scores per user, best first.

        The fast form of :meth:`top_n_batch` (no per-item tuples). ``exclude[r]``
        holds the ids user ``r`` must never get (any iterable of ids, e.g. a dict
        of their history). Unknown users get empty lists. Below ``pooled_search_min_items``
        items the ranking is brute force; above, a shared candidate pool with a
        per-user proof (:func:`models.topn.pooled_top_n`). Both are exact.

        >>> model = BPRMF(n_factors=4, seed=0)
        >>> model.learn_batch(["ann", "ann", "bob"], ["a", "b", "c"])
        >>> ids, scores = model.top_n_lists(["ann", "nobody"], 2, exclude=[["a"], []])
        >>> sorted(ids[0]), len(scores[0]), ids[1], scores[1]
        (['b', 'c'], 2, [], [])
        >>> ids[0] == [i for i, _ in model.top_n_batch(["ann"], 2, [["a"]])[0]]
        True
        """
        C.check_ids(users, "users")
        n = C.check_n(n)
        if exclude is not None and len(exclude) != len(users):
            raise InvalidInputError(f"exclude has {len(exclude)} entries for {len(users)} users")
        uidx = self._users.lookup(users)
        known = np.flatnonzero(uidx >= 0)
        all_known = len(known) == len(users)
        ex = exclude if exclude is None or all_known else [exclude[r] for r in known.tolist()]
        U = uidx if all_known else uidx[known]
        rows, scores = self._top_rows(self._U[U], n, ex, U)
        names, values = C.as_lists(rows, scores, self._items._array())
        if all_known:
            return names, values
        out_ids: list[list[str]] = [[] for _ in users]
        out_scores: list[list[float]] = [[] for _ in users]
        for r, a, s in zip(known.tolist(), names, values):
            out_ids[r], out_scores[r] = a, s
        return out_ids, out_scores

    def top_n_matrix(
        self, users: Sequence[str], n: int, exclude: Sequence[Iterable[str]] | None = None
    ) -> tuple[list[list[str]], np.ndarray]:
        """:meth:`top_n_lists` of known ``users`` with the scores as one ``(len(users), width)`` array.

        ``width`` is ``n``, or fewer with a smaller catalog; a row of a user who has fewer items
        left is padded with ``-inf`` (its id list is shorter). Cheaper when the scores go on as
        numbers (the worker encodes them straight to JSON). Raises :class:`UnknownIdError` for an
        unknown user.

        >>> model = BPRMF(n_factors=4, seed=0)
        >>> model.learn_batch(["ann", "ann", "bob"], ["a", "b", "c"])
        >>> ids, scores = model.top_n_matrix(["ann", "bob"], 2, exclude=[["a", "b"], []])
        >>> ids[0], scores.shape, float(scores[0, 1])
        (['c'], (2, 2), -inf)
        """
        C.check_ids(users, "users")
        n = C.check_n(n)
        if exclude is not None and len(exclude) != len(users):
            raise InvalidInputError(f"exclude has {len(exclude)} entries for {len(users)} users")
        uidx = self._known(self._users, users, "user")
        rows, scores = self._top_rows(self._U[uidx], n, exclude, uidx)
        valid = rows >= 0
        names = self._items._array()[np.where(valid, rows, 0)].tolist()
        if rows.size and not valid[:, -1].all():
            for r, keep in zip(np.flatnonzero(~valid[:, -1]).tolist(), valid.sum(1)[~valid[:, -1]].tolist()):
                names[r] = names[r][:keep]
        return names, scores

    def _top_rows(
        self, P: np.ndarray, n: int, exclude: Sequence[Iterable[str]] | None, uidx: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Item rows and scores of the top-n of each user vector of ``P`` (``-1`` / ``-inf`` padded);
        with ``uidx`` (the users of ``P``), their session's pull added."""
        ni = len(self._items)
        V, b = self._V[:ni], self._b[:ni]
        blend = self.session.active and uidx is not None and n > 0 and len(P) > 0
        pooled = self.pooled_search_min_items is not None and ni >= self.pooled_search_min_items and len(P) > 0
        # Looked up once, here: an entry may be a one-shot iterator, and a second round needs it again.
        excluded = None if exclude is None else C.flatten_exclude(exclude, self._items)
        if pooled:
            rows, scores = pooled_top_n(P, V, b, n, excluded, pool_size=self.pool_size)
        else:
            rows, scores = C.rank_arrays(lambda lo, hi: P[lo:hi] @ V.T + b, len(P), n, self._items, excluded)
        if not blend:
            return rows, scores
        assert uidx is not None
        return self._blend(uidx, P, rows, scores, n, excluded)

    def _spread(self, uidx: np.ndarray) -> np.ndarray:
        """The scale of each user's scores, which the session's pull is measured in: the spread of the item
        biases plus the user's norm times the items' root-mean-square norm (the same whatever is excluded;
        the item statistics are refreshed every ``STATS_EVERY`` learn calls)."""
        if self._item_scale is None or self._learn_calls - self._item_scale[0] >= STATS_EVERY:
            n = len(self._items)
            V = self._V[:n]
            rms = math.sqrt(float(np.einsum("ij,ij->", V, V)) / max(n, 1))
            self._item_scale = (self._learn_calls, float(self._b[:n].std()) if n else 0.0, rms)
        _, std_b, rms = self._item_scale
        P = self._U[uidx]
        out: np.ndarray = std_b + np.sqrt(np.einsum("ij,ij->i", P, P)) * rms
        return out

    def _session_pull(self, uidx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The session's candidates for users ``uidx`` and their pull (:meth:`models.session.Session.pull`)."""
        return self.session.pull(uidx, self._tags, self._b[: len(self._items)], self._learn_calls)

    def _add_pull(self, uidx: np.ndarray, scores: np.ndarray) -> None:
        """Add the session's pull to dense factor scores ``(len(uidx), n_items)``, in place."""
        n = scores.shape[1]
        cand, pull = self._session_pull(uidx)
        ok = (cand >= 0) & (cand < n)
        r = np.nonzero(ok)[0]
        gain = pull * self._spread(uidx)[:, None]
        np.add.at(scores, (r, cand[ok]), gain[ok].astype(scores.dtype))

    def _blend(
        self, uidx: np.ndarray, P: np.ndarray, rows: np.ndarray, scores: np.ndarray, n: int,
        excluded: tuple[np.ndarray, np.ndarray] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n of factor score plus session pull, from the factor top-n (``rows``, ``scores``) and the
        session's candidates: exact, since an item outside both has no pull and n items of the factor
        top score at least as much."""
        ni = len(self._items)
        cand, pull = self._session_pull(uidx)
        gain = pull * self._spread(uidx)[:, None]
        live = np.flatnonzero((cand >= 0).reshape(-1))
        if excluded is not None and len(excluded[0]) and len(live):
            key = (live // cand.shape[1]) * ni + cand.reshape(-1)[live]
            ex = np.sort(excluded[0] * ni + excluded[1])
            at = np.minimum(np.searchsorted(ex, key), len(ex) - 1)
            gain.reshape(-1)[live[ex[at] == key]] = 0.0
        cand = np.where(gain > 0, cand, -1)
        # the candidates' factor scores; the factor top's are known
        safe = np.maximum(cand, 0)
        cand_scores = np.einsum("bk,bwk->bw", P, self._V[safe]) + self._b[safe]
        # every user's candidates in one row, sorted by item: an item's gains are summed into the last of
        # its columns, the others dropped
        items = np.concatenate([rows, cand], 1)
        base = np.concatenate([scores, cand_scores.astype(scores.dtype)], 1)
        gains = np.concatenate([np.zeros(rows.shape, np.float32), gain.astype(np.float32)], 1)
        order = np.argsort(items, axis=1)
        items = np.take_along_axis(items, order, 1)
        last, sums = C.run_sums(items, np.take_along_axis(gains, order, 1))
        total = np.take_along_axis(base, order, 1).astype(np.float64) + sums
        total[~last | (items < 0)] = -np.inf
        cols, out_scores = C.top_arrays(total, min(n, ni))
        out_rows = np.where(cols >= 0, np.take_along_axis(items, np.maximum(cols, 0), 1), -1)
        return out_rows, out_scores.astype(scores.dtype)

    def loss(
        self, users: Sequence[str], items: Sequence[str], n_samples: int = 10, seed: int = 0
    ) -> float:
        """Mean BPR log-loss :math:`-\\ln\\sigma(\\hat x_{ui} - \\hat x_{uj})` over the given positives.

        Each positive is paired with ``n_samples`` uniform negatives drawn by a
        separate generator seeded with ``seed`` (the model's own generator is
        untouched), so repeated calls are comparable. Ids must be known.
        """
        C.check_pairs(users, items)
        u, i = self._known(self._users, users, "user"), self._known(self._items, items, "item")
        n = len(self._items)
        if n < 2 or n_samples < 1 or len(u) == 0:
            raise InvalidInputError("loss needs >= 2 known items, >= 1 sample and >= 1 event")
        j = np.random.default_rng(seed).integers(0, n - 1, size=(len(u), n_samples))
        j += j >= i[:, None]
        p = self._U[u].astype(np.float64)
        xi = np.einsum("bk,bk->b", p, self._V[i]) + self._b[i]
        xj = np.einsum("bk,bmk->bm", p, self._V[j]) + self._b[j]
        return float(np.logaddexp(0.0, xj - xi[:, None]).mean())

    # ------------------------------------------------------------ row access
    def user_vectors(self, users: Sequence[str]) -> np.ndarray:
        """Copy of the factor rows ``(len(users), k)``; raises :class:`UnknownIdError` for unknown ids."""
        rows: np.ndarray = self._U[self._known(self._users, users, "user")]
        return rows

    def item_vectors(self, items: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the item factor rows ``(len(items), k)`` and biases ``(len(items),)``."""
        i = self._known(self._items, items, "item")
        return self._V[i], self._b[i]

    def _check_rows(self, ids: Sequence[str], vectors: np.ndarray, what: str) -> np.ndarray:
        C.check_ids(ids, what)
        v = np.asarray(vectors, dtype=self.dtype)
        if v.shape != (len(ids), self.n_factors) or not np.isfinite(v).all():
            raise InvalidInputError(
                f"{what} vectors must be finite with shape ({len(ids)}, {self.n_factors}), got {v.shape}"
            )
        return v

    def set_user_vectors(self, users: Sequence[str], vectors: np.ndarray) -> None:
        """Overwrite (or create) user rows, e.g. when restoring from a changelog.

        New users are added without consuming the random generator. Ids must
        not repeat (which row would win is unspecified).
        """
        v = self._check_rows(users, vectors, "users")
        u = self._index_users(users, init=False)  # may reallocate self._U
        self._U[u] = v

    def restore_sessions(self, users: Sequence[str], recent_items: Sequence[Sequence[str]]) -> None:
        """Replace the session of known ``users`` with their most recently engaged items, e.g. when restoring.

        ``recent_items[r]`` holds user ``r``'s engaged items, oldest first. Their last
        ``session_events`` known items become the user's recent events, the last one the newest,
        each with relative weight 1 (the event weights are not checkpointed); the user's count of
        events learned, which ``session_boost`` reads, becomes the number of engaged items. Unknown
        items are skipped, not created. The co-visitation counts do not change (they were counted when the
        events were learned) and the random generator is not used. Raises
        :class:`UnknownIdError` for an unknown user (restore its vector with
        :meth:`set_user_vectors` first); ids must not repeat.

        >>> model = BPRMF(n_factors=4, seed=0)
        >>> model.learn_batch(["bob", "bob", "cy", "cy"], ["a", "b", "c", "d"])  # co-visited: a-b, c-d
        >>> model.set_user_vectors(["ann"], np.zeros((1, 4)))  # ann comes back on a fresh worker
        >>> before = model.score("ann")
        >>> model.restore_sessions(["ann"], [["zz", "c"]])  # "zz" is unknown here: skipped
        >>> [item for item, gain in zip(model.item_ids, model.score("ann") - before) if gain > 0]
        ['d']
        """
        C.check_ids(users, "users")
        if len(recent_items) != len(users):
            raise InvalidInputError(f"got {len(users)} users but {len(recent_items)} lists of items")
        uidx = self._known(self._users, users, "user")
        R = self.session.events
        for u, items in zip(uidx.tolist(), recent_items):
            C.check_ids(items, "items")
            rows: list[int] = []  # newest first; a long history is read from its end only
            for item in reversed(items):
                if len(rows) == R:
                    break
                row = self._items.get(item)
                if row is not None:
                    rows.append(row)
            rows.reverse()
            self.session.restore(u, rows, max(len(items), 1))

    def set_item_vectors(self, items: Sequence[str], vectors: np.ndarray, biases: np.ndarray) -> None:
        """Overwrite (or create) item rows and biases; see :meth:`set_user_vectors`."""
        v = self._check_rows(items, vectors, "items")
        bias = np.asarray(biases, dtype=self.dtype)
        if bias.shape != (len(items),) or not np.isfinite(bias).all():
            raise InvalidInputError(f"biases must be finite with shape ({len(items)},), got {bias.shape}")
        i = self._index_items(items, init=False)
        self._V[i], self._b[i] = v, bias

    # -------------------------------------------------------- serialisation
    def _params(self) -> dict[str, Any]:
        s = self.session
        return {
            "n_factors": self.n_factors, "learning_rate": self.learning_rate,
            "regularization": self.regularization, "n_negatives": self.n_negatives,
            "init_std": self.init_std, "max_grad_norm": self.max_grad_norm, "seed": self.seed,
            "dtype": self.dtype.name, "max_weight": self.max_weight, "bias_lr_scale": self.bias_lr_scale,
            "max_user_steps": self.max_user_steps, "negative_candidates": self.negative_candidates,
            "weight_exponent": self.weight_exponent, "normalize_weights": self.normalize_weights,
            "user_lr_scale": self.user_lr_scale, "user_decay": self.user_decay,
            "user_decay_half_life_s": self.user_decay_half_life_s, "tag_init": self.tag_init,
            "covisit_weight": s.covisit_weight, "covisit_neighbours": s.covisit.k,
            "covisit_window": s.covisit_window, "covisit_candidates": s.covisit_candidates,
            "session_events": s.events, "session_decay": s.decay, "session_tag_weight": s.tag_weight,
            "session_tags": s.tags, "session_tag_items": s.tag_items, "session_boost": s.boost,
        }

    def to_bytes(self) -> bytes:
        """Serialise hyperparameters, id maps, factors, tags and generator state (no pickle)."""
        nu, ni = len(self._users), len(self._items)
        tags, tag_ptr, tag_idx = self._tags.to_arrays(ni)
        meta = {
            "params": self._params(), "rng": self._rng.bit_generator.state,
            "users": self._users.to_list(), "items": self._items.to_list(),
            "weight_stats": [self._w_sum, self._w_count], "tags": tags,
        }
        arrays = {
            "U": self._U[:nu], "V": self._V[:ni], "b": self._b[:ni], "last_ms": self._last_ms[:nu],
            "tag_ptr": tag_ptr, "tag_idx": tag_idx, **self.session.to_arrays(nu, ni),
        }
        return C.pack(_KIND, meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> BPRMF:
        """Rebuild a model from :meth:`to_bytes`; it then learns exactly as the original would."""
        meta, a = C.unpack(data, _KIND)
        try:
            model = cls(**meta["params"])
            model._rng.bit_generator.state = meta["rng"]
            model._users, model._items = IdMap.from_list(meta["users"]), IdMap.from_list(meta["items"])
            U, V, b = (np.ascontiguousarray(a[k], dtype=model.dtype) for k in ("U", "V", "b"))
            nu, ni = model.n_users, model.n_items
            if U.shape != (nu, model.n_factors) or V.shape != (ni, model.n_factors) or b.shape != (ni,):
                raise ValueError("array shapes do not match the id maps")
            last = np.array(a["last_ms"], dtype=np.float64)
            if last.shape != (nu,):
                raise ValueError("user times do not match the id map")
            w_sum, w_count = meta["weight_stats"]
            model._w_sum, model._w_count = float(w_sum), int(w_count)
            model._tags = TagIndex.from_arrays(meta["tags"], a["tag_ptr"], a["tag_idx"], ni)
            model.session.load_arrays(a, nu, ni)
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(f"corrupt {_KIND} bytes: {e}") from e
        model._U, model._V, model._b, model._last_ms = U, V, b, last
        return model

    def __repr__(self) -> str:
        return f"BPRMF(n_factors={self.n_factors}, n_users={self.n_users}, n_items={self.n_items})"
