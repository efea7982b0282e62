from __future__ import annotations

import numpy as np
import pytest

from streams.state.codecs import (
    ItemState,
    StateCorrupt,
    decode_item,
    decode_user,
    encode_item,
    encode_items,
    encode_user,
    encode_users,
)


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


def test_batch_encoders_are_byte_identical_and_round_trip():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((40, 8))  # float64 in: both paths store float32
    histories = [[f"i{k}" for k in rng.integers(0, 100, rng.integers(0, 6))] for _ in range(40)]
    histories[3] = ("tuple", "history")
    assert encode_users(vectors, histories) == [encode_user(v, h) for v, h in zip(vectors, histories)]
    biases = rng.standard_normal(40).astype(np.float32)
    creators = [None if j % 5 == 0 else f"c\u00e9{j}" for j in range(40)]
    tags = [tuple(f"t{k}" for k in range(j % 4)) for j in range(40)]
    popularity = rng.random(40) * 100
    states = [ItemState(v, float(b), c, t, float(p), 1_700_000_000_123) for v, b, c, t, p in
              zip(vectors, biases, creators, tags, popularity)]
    blobs = encode_items(vectors, biases, creators, tags, popularity, 1_700_000_000_123)
    assert blobs == [encode_item(s) for s in states]
    per_item_times = np.arange(40, dtype=np.int64)
    assert encode_items(vectors, biases, creators, tags, popularity, per_item_times)[7] == encode_item(
        ItemState(vectors[7], float(biases[7]), creators[7], tags[7], float(popularity[7]), 7))
    back = decode_item(blobs[6])
    assert back.vector.tolist() == vectors[6].astype(np.float32).tolist() and back.tags == tags[6]
    assert encode_users(np.zeros((0, 8)), []) == [] and encode_items(np.zeros((0, 8)), [], [], [], [], 0) == []
    with pytest.raises(ValueError):
        encode_users(vectors, histories[:3])
    with pytest.raises(ValueError):
        encode_items(vectors, biases, creators, tags, popularity, per_item_times[:3])


def test_item_co_visit_neighbours_round_trip_and_records_without_them_still_decode():
    state = ItemState(np.ones(2, np.float32), 0.5, "c1", ("a",), 2.0, 7, offset=41, number=12,
                      neighbours=(3, 2**40), covisit_counts=(5.0, 0.5))
    back = decode_item(encode_item(state))
    assert (back.neighbours, back.covisit_counts, back.number, back.offset) == ((3, 2**40), (5.0, 0.5), 12, 41)
    blobs = encode_items(np.ones((2, 2)), [0.5, 0.5], ["c1", "c1"], [("a",), ("a",)], [2.0, 2.0], 7, [41, 41],
                         [12, 13], neighbours=[[3, 2**40], []], covisit_counts=[[5.0, 0.5], []])
    assert blobs[0] == encode_item(state)
    assert blobs[1] == encode_item(ItemState(np.ones(2, np.float32), 0.5, "c1", ("a",), 2.0, 7, 41, 13))
    assert b'"cn"' not in blobs[1]  # an item without neighbours costs no byte more than before
    # A record written before the co-visit fields existed (its exact bytes): no neighbours.
    old = b"SRI1\x02\x00" + np.ones(2, "<f4").tobytes() + b'{"b":0.5,"c":"c1","t":["a"],"p":2.0,"pt":7,"o":41,"n":12}'
    back = decode_item(old)
    assert (back.neighbours, back.covisit_counts, back.number, back.bias) == ((), (), 12, 0.5)
    with pytest.raises(StateCorrupt):  # neighbours without their counts
        decode_item(old[:-1] + b',"cn":[3]}')
    with pytest.raises(ValueError):
        encode_items(np.ones((1, 2)), [0.5], ["c1"], [()], [2.0], 7, neighbours=[[3]])
