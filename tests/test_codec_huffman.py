"""Canonical Huffman: exact round trips, optimal code lengths, and FormatError on bad input."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepshrink.codec import huffman
from deepshrink.errors import FormatError

INT_DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64]


def _heap_huffman_cost(counts: np.ndarray) -> int:
    """Total bits of an optimal prefix code, by the textbook heap construction."""
    heap = [int(c) for c in counts if c > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        total += a + b
        heapq.heappush(heap, a + b)
    return total


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(INT_DTYPES),
    data=st.data(),
)
def test_round_trip_exact_values_and_dtype(dtype, data):
    n = data.draw(st.integers(0, 3000))
    top = data.draw(st.sampled_from([1, 2, 3, 17, 120]))
    arr = data.draw(hnp.arrays(dtype, n, elements=st.integers(0, top - 1)))
    out = huffman.decode(huffman.encode(arr))
    assert out.dtype == arr.dtype
    assert np.array_equal(out, arr)


def test_large_skewed_stream_round_trips_through_many_lanes():
    rng = np.random.default_rng(1)
    s = (rng.geometric(0.2, size=300_000) - 1).clip(0, 200).astype(np.int32)
    assert np.array_equal(huffman.decode(huffman.encode(s)), s)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 10_000), min_size=2, max_size=60))
def test_code_lengths_are_optimal(counts):
    counts = np.array(counts)
    lengths = huffman.code_lengths(counts)
    assert int((counts * lengths).sum()) == _heap_huffman_cost(counts)
    assert sum(2.0 ** -int(x) for x in lengths) <= 1.0


def test_lengths_are_limited_and_kraft_holds():
    counts = np.array([2**k for k in range(40)], dtype=np.int64)  # Fibonacci-like skew wants 39-bit codes
    lengths = huffman.code_lengths(counts, max_len=huffman.MAX_LEN)
    assert int(lengths.max()) == huffman.MAX_LEN
    assert sum(2.0 ** -int(x) for x in lengths) <= 1.0
    s = np.repeat(np.arange(40), np.minimum(counts, 5000)).astype(np.int64)
    assert np.array_equal(huffman.decode(huffman.encode(s)), s)


def test_codes_are_canonical():
    codes, order = huffman.canonical_codes(np.array([2, 1, 3, 3], dtype=np.uint8))
    assert codes.tolist() == [0b10, 0b0, 0b110, 0b111]
    assert order.tolist() == [1, 0, 2, 3]


def test_rejects_negative_or_float_symbols():
    with pytest.raises(ValueError, match="in \\[0"):
        huffman.encode(np.array([-1, 2]))
    with pytest.raises(ValueError, match="integer"):
        huffman.encode(np.array([1.5]))


def test_every_truncation_and_byte_flip_raises_format_error_or_decodes():
    s = np.random.default_rng(2).integers(0, 9, size=500).astype(np.uint8)
    data = huffman.encode(s)
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            huffman.decode(data[:cut])
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x5A
        try:
            huffman.decode(bytes(bad))
        except FormatError:
            pass
