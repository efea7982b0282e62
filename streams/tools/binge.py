"""``streamrec eval --scenario binge``: does a user's list follow a binge within a few items?

    streamrec eval --scenario binge --json
    streamrec eval --scenario binge --binge-users 400 --seed 3

A short-video feed lives on the session: someone who has just watched, liked and shared four
cooking videos expects cooking next. This scenario measures it on the synthetic world, through
the worker's own learning state (:class:`~streams.worker.learner.Learner`, in process: no Kafka,
no Redis; the lists are the ones the worker would write):

1. background traffic (users in sessions, Zipf activity) warms the model up;
2. two groups binge one community each, item after item (watched in full, liked, shared), one
   batch per item with background traffic in it, as the worker would take them:
   ``new`` users, never seen before, and ``switching`` users, established (20 items or more)
   and bingeing a community that is none of their three favourites and that none of their
   items carries. Binges run in waves of about one user per community, so that no community
   trends because of the binges themselves;
3. after k = 1, 2, 4, 8 binged items, each user's top-10 is read: ``share`` is the fraction of
   it carrying the binged community's tag, ``next_hit`` whether the binge's next item (the
   (k+1)-th) is in it. Both are averaged over the users of a group. ``next_hit_ceiling`` is the
   best ``next_hit`` any top-10 could have: a binge picks its items by popularity within the
   community, so no list does better than the community's 10 most popular items the user has not
   engaged (:meth:`~streams.tools.synthetic.SyntheticWorld.binge_next_odds`).

Everything derives from ``seed``: the same options give the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BINGE_STEPS", "BingeOptions", "run_binge"]

#: Binged items after which the lists are read.
BINGE_STEPS = (1, 2, 4, 8)
_ITEMS_PER_BINGE = BINGE_STEPS[-1] + 1  # the last step's "next item" included
_TOP = 10


@dataclass(frozen=True)
class BingeOptions:
    """The scenario's size; the defaults take ~10 s on one core."""

    users: int = 200  # per group
    world_users: int = 20_000
    items: int = 10_000
    communities: int = 24
    warmup: int = 200_000
    background_per_item: int = 300  # background events in the batch of each binged item
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.users, self.world_users, self.items, self.communities) < 1 or self.warmup < 0 \
                or self.background_per_item < 0:
            raise ValueError("users, world_users, items and communities must be >= 1; warmup and "
                             "background_per_item >= 0")


def run_binge(options: BingeOptions, settings: Any = None) -> dict[str, Any]:
    """Run the scenario; ``settings`` (a :class:`~streams.settings.Settings`) shapes the learner.

    Returns ``{"options", "steps", "users_per_group", "new": {"share": [...], "next_hit": [...],
    "next_hit_ceiling": [...]}, "switching": {...}}``, one value per step of :data:`BINGE_STEPS` (``None`` for a group without users:
    a world too small to have established users).

    >>> result = run_binge(BingeOptions(users=4, world_users=300, items=200, communities=4, warmup=3000,
    ...                                 background_per_item=20))
    >>> result["steps"], sorted(result["users_per_group"]), len(result["new"]["share"])
    ([1, 2, 4, 8], ['new', 'switching'], 4)
    >>> result["users_per_group"]["new"], all(0.0 <= x <= 1.0 for x in result["new"]["share"])
    (4, True)
    """
    import numpy as np
    import orjson

    from streams.settings import Settings
    from streams.state.store import MemoryStateStore
    from streams.tools.synthetic import SyntheticWorld, WorldConfig
    from streams.worker.learner import Learner, RawMessage

    settings = settings or Settings(worker_id="binge", top_n=_TOP)
    world = SyntheticWorld(WorldConfig(users=options.world_users, items=options.items,
                                       communities=options.communities, seed=options.seed))
    learner = Learner(settings, MemoryStateStore())
    offset = 0

    def learn(events: list[dict[str, Any]]) -> None:
        nonlocal offset
        messages = [RawMessage(e["user_id"].encode(), orjson.dumps(e), "events", 0, offset + j)
                    for j, e in enumerate(events)]
        offset += len(events)
        outcome = learner.process(messages)
        if outcome.dead_letters:
            raise RuntimeError(f"the learner rejected a generated event: {outcome.dead_letters[0].reason}")

    now_ms = int(time.time() * 1000)
    background = world.events(options.warmup + 10**9, start_ms=now_ms - 3_600_000, rate_per_s=1000.0)
    for lo in range(0, options.warmup, 1000):
        learn([next(background) for _ in range(min(1000, options.warmup - lo))])

    rng = np.random.default_rng(options.seed)
    communities = list(world.communities)
    history = learner.history
    groups: dict[str, list[tuple[str, str]]] = {
        "new": [(f"binge-{options.seed}-{j}", communities[int(rng.integers(len(communities)))])
                for j in range(options.users)],
        "switching": [],
    }
    veterans = sorted(u for u, items in history.items() if len(items) >= 20)
    rng.shuffle(veterans)
    for user in veterans:
        if len(groups["switching"]) == options.users:
            break
        engaged = {tag for item in history[user] for tag in world.item_tags(item)}
        favourites = set(world.user_top_communities(user, 3))
        fresh = [c for c in communities if c not in favourites and c not in engaged]
        if fresh:
            groups["switching"].append((user, fresh[int(rng.integers(len(fresh)))]))
    binges = {user: world.engage(user, tag, _ITEMS_PER_BINGE, 0) for group in groups.values() for user, tag in group}

    share: dict[str, dict[int, list[float]]] = {name: {k: [] for k in BINGE_STEPS} for name in groups}
    next_hit: dict[str, dict[int, list[float]]] = {name: {k: [] for k in BINGE_STEPS} for name in groups}
    ceiling: dict[str, dict[int, list[float]]] = {name: {k: [] for k in BINGE_STEPS} for name in groups}
    members = [(name, user, tag) for name, group in groups.items() for user, tag in group]
    wave = max(1, options.communities // 2)
    for lo in range(0, len(members), wave):
        team = members[lo:lo + wave]
        start = int(time.time() * 1000) - 60_000
        for k in range(1, _ITEMS_PER_BINGE):
            batch = [next(background) for _ in range(options.background_per_item)]
            for _, user, _ in team:
                item_events = binges[user][3 * (k - 1):3 * k]  # view, like, share of the k-th item
                batch.extend({**e, "ts": start + 10 * k + j} for j, e in enumerate(item_events))
            learn(batch)
            if k not in BINGE_STEPS:
                continue
            known, items, _ = learner.recommendation_lists([user for _, user, _ in team])
            lists = dict(zip(known, items))
            for name, user, tag in team:
                top = lists.get(user, [])[:_TOP]
                share[name][k].append(sum(tag in world.item_tags(item) for item in top) / _TOP)
                next_hit[name][k].append(float(binges[user][3 * k]["item_id"] in top))
                ceiling[name][k].append(world.binge_next_odds(tag, history[user], _TOP))

    result: dict[str, Any] = {"options": asdict(options), "steps": list(BINGE_STEPS),
                              "users_per_group": {name: len(group) for name, group in groups.items()}}
    for name in groups:
        result[name] = {
            "share": [round(float(np.mean(share[name][k])), 3) if share[name][k] else None for k in BINGE_STEPS],
            "next_hit": [round(float(np.mean(next_hit[name][k])), 3) if next_hit[name][k] else None
                         for k in BINGE_STEPS],
            "next_hit_ceiling": [round(float(np.mean(ceiling[name][k])), 3) if ceiling[name][k] else None
                                 for k in BINGE_STEPS],
        }
    return result
