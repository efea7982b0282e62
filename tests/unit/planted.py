"""A synthetic stream with planted tastes, shared by the model tests."""

from __future__ import annotations

import numpy as np


def planted_stream(
    n_events: int, *, n_groups: int = 4, users_per_group: int = 40, items_per_group: int = 30, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Users of group g only engage items of group g (ids ``u{n}``/``i{n}``, group = n // per_group)."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, n_groups * users_per_group, n_events)
    pop = 1.0 / np.arange(1, items_per_group + 1) ** 0.7
    it = rng.choice(items_per_group, n_events, p=pop / pop.sum()) + (u // users_per_group) * items_per_group
    return [f"u{x}" for x in u], [f"i{x}" for x in it]


def planted_tag(item: str, items_per_group: int = 30) -> str:
    """The taste group of a planted item id as a tag: ``i{n}`` -> ``g{n // items_per_group}``."""
    return f"g{int(item[1:]) // items_per_group}"
