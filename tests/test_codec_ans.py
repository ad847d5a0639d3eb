"""rANS: exact round trips, within 1% of the Shannon bound plus table, FormatError on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepshrink.codec import ans, huffman, streams
from deepshrink.errors import FormatError


def _shannon_bytes(s: np.ndarray) -> float:
    c = np.bincount(s)
    p = c[c > 0] / s.size
    return float(-(c[c > 0] * np.log2(p)).sum() / 8)


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.int64]), data=st.data())
def test_round_trip_exact(dtype, data):
    n = data.draw(st.integers(0, 3000))
    top = data.draw(st.sampled_from([1, 2, 5, 100]))
    arr = data.draw(hnp.arrays(dtype, n, elements=st.integers(0, top - 1)))
    out = ans.decode(ans.encode(arr))
    assert out.dtype == arr.dtype
    assert np.array_equal(out, arr)


@pytest.mark.parametrize("p_rare", [0.02, 0.3])
def test_within_one_percent_of_shannon_bound_plus_table(p_rare):
    rng = np.random.default_rng(0)
    s = np.where(rng.random(400_000) < p_rare, rng.integers(1, 30, 400_000), 0).astype(np.int64)
    data = ans.encode(s)
    table = len(ans.encode(np.arange(30)))  # header + frequency table of the same alphabet, ~no payload
    assert len(data) <= 1.01 * _shannon_bytes(s) + table
    assert np.array_equal(ans.decode(data), s)
    # Huffman cannot go below 1 bit per symbol: rANS must win clearly on the skewed stream
    if p_rare == 0.02:
        assert len(data) < 0.5 * len(huffman.encode(s))


def test_streams_pick_the_smaller_coder_and_constant():
    rng = np.random.default_rng(3)
    skewed = (rng.random(50_000) < 0.01).astype(np.int64)
    assert streams.coder_of(streams.encode(skewed)) == "rans"
    assert streams.coder_of(streams.encode(np.full(10, 4))) == "constant"
    assert np.array_equal(streams.decode(streams.encode(skewed), skewed.size, 2), skewed)


def test_stream_count_and_alphabet_are_enforced():
    data = streams.encode(np.array([0, 1, 2, 1]))
    with pytest.raises(FormatError):
        streams.decode(data, 5, 3)
    with pytest.raises(FormatError, match="alphabet"):
        streams.decode(data, 4, 2)


def test_truncations_and_flips_raise_format_error_or_decode():
    s = np.random.default_rng(2).integers(0, 5, size=600).astype(np.int64)
    data = ans.encode(s)
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            ans.decode(data[:cut])
    rng = np.random.default_rng(5)
    for _ in range(200):
        bad = bytearray(data)
        bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
        try:
            ans.decode(bytes(bad))
        except FormatError:
            pass


def test_declared_count_is_capped():
    data = ans.encode(np.array([0, 1] * 10))
    with pytest.raises(FormatError, match="allowed"):
        ans.decode(data, max_count=5)
