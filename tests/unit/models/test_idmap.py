"""Unit tests of :mod:`models.idmap`."""

from __future__ import annotations

import numpy as np
import pytest

from models import IdMap, InvalidInputError


def test_idmap_grows_in_first_seen_order() -> None:
    m = IdMap()
    np.testing.assert_array_equal(m.index(["b", "a", "b", "c"]), [0, 1, 0, 2])
    assert m.index(["c", "d"]).dtype == np.int64
    assert m.ids == ["b", "a", "c", "d"] and len(m) == 4 and "a" in m and "z" not in m
    assert m.get("c") == 2 and m.get("z") is None
    np.testing.assert_array_equal(m.lookup(["d", "zz", "b"]), [3, -1, 0])
    assert len(m) == 4  # lookup never adds
    assert IdMap.from_list(m.to_list()).ids == m.ids
    ids = m.ids
    ids.append("x")  # a copy
    assert len(m) == 4


def test_idmap_rejects_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        IdMap().index("abc")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        IdMap.from_list(["a", "a"])
    assert IdMap().index([]).shape == (0,)
