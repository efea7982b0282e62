from __future__ import annotations

import numpy as np
import pytest

from streams.state import ItemState, StateCorrupt, decode_item, decode_user, encode_item, encode_user


def test_item_round_trip():
    state = ItemState(np.arange(4, dtype=np.float32), 0.25, "c1", ("a", "b"), 3.5, 1234)
    back = decode_item(encode_item(state))
    assert back.vector.tolist() == [0, 1, 2, 3] and (back.bias, back.creator_id, back.tags) == (0.25, "c1", ("a", "b"))
    assert (back.popularity, back.popularity_ts_ms) == (3.5, 1234)


def test_corrupt_values_raise_clearly():
    with pytest.raises(StateCorrupt):
        decode_user(b"xx")
    with pytest.raises(StateCorrupt):
        decode_item(encode_user(np.zeros(2, np.float32), []))
    with pytest.raises(StateCorrupt):
        decode_user(encode_user(np.zeros(8, np.float32), ["a"])[:20])
