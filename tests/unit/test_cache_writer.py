from __future__ import annotations

import math

import numpy as np
import pytest

from streams.cache import encode_list, encode_lists


def reference(users, items, scores):
    return [encode_list(list(zip(i, s)), source="personal", updated_ms=17, model_version="v\"2", user_id=u)
            for u, i, s in zip(users, items, scores)]


def test_batch_values_are_byte_identical_to_encode_list():
    rng = np.random.default_rng(3)
    n, m = 300, 50
    raw = np.concatenate([rng.standard_normal(n * m // 2) * 10.0 ** rng.integers(-8, 8, n * m // 2),
                          rng.integers(-10**6, 10**6, n * m // 2) / 2e5 + 5e-6,  # many exact and near ties
                          ]).reshape(n, m)
    raw[0, :8] = [math.nan, math.inf, -math.inf, -0.0, 1e300, -1e-300, 2.675e-5, 0.000125]
    users = [f"u{j}\u00e9\"" for j in range(n)]
    items = [[f"i{k}" for k in rng.integers(0, 10**6, m)] for _ in range(n)]
    want = reference(users, items, raw.tolist())
    assert encode_lists(users, items, raw, source="personal", updated_ms=17, model_version="v\"2") == want
    with np.errstate(over="ignore"):
        as_float32 = raw.astype(np.float32)  # scores as the models give them
    assert encode_lists(users, items, list(as_float32), source="personal", updated_ms=17, model_version="v\"2") == \
        reference(users, items, as_float32.tolist())
    assert encode_lists(users, [tuple(i) for i in items], raw.tolist(), source="personal", updated_ms=17,
                        model_version="v\"2") == want


def test_ragged_empty_and_mismatched_inputs():
    users, items, scores = ["a", "b", "c"], [["x", "y"], [], ["z"]], [[0.123456, 2], [], [1 / 3]]
    assert encode_lists(users, items, scores, source="personal", updated_ms=17, model_version="v\"2") == \
        reference(users, items, scores)
    assert encode_lists([], [], [], source="personal", updated_ms=1, model_version="v") == []
    empty_rows = encode_lists(["a", "b"], [[], []], np.zeros((2, 0)), source="personal", updated_ms=17, model_version="v\"2")
    assert empty_rows == reference(["a", "b"], [[], []], [[], []])
    with pytest.raises(ValueError):
        encode_lists(["a"], [], [], source="personal", updated_ms=1, model_version="v")
