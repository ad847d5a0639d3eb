"""Tensor codecs: bit-exact round trips for every dtype and special value, and the smallest codec wins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.codec.dtypes import DTYPES, from_bits, to_bits
from deepshrink.codec.gaps import decode_positions, encode_positions
from deepshrink.codec.tensor_codecs import CODECS, decode_bits, encode_bits
from deepshrink.errors import FormatError

SPECIAL = {
    "float32": [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, 3.5],
    "float16": [0.0, -0.0, float("nan"), float("inf"), 6e-8, -2.0],
    "bfloat16": [0.0, -0.0, float("nan"), -float("inf"), 1.0],
    "float64": [0.0, -0.0, float("nan"), float("inf"), 5e-324],
}


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(to_bits(a)[1], to_bits(b)[1])


@st.composite
def tensors(draw):
    name = draw(st.sampled_from(sorted(DTYPES)))
    shape = draw(st.sampled_from([(), (0,), (1,), (7,), (3, 5), (2, 0, 3), (40, 30)]))
    numel = int(np.prod(shape)) if shape else 1
    ubits = DTYPES[name][1]
    mode = draw(st.sampled_from(["random", "zeros", "one_value", "sparse", "shared", "sparse_shared", "special"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    width = 8 * ubits.itemsize
    raw = rng.integers(0, 2**width, size=numel, dtype=np.uint64 if width == 64 else np.int64).astype(ubits)
    if name == "bool":
        raw = raw & 1
    if mode == "zeros":
        raw[:] = 0
    elif mode == "one_value":
        raw[:] = raw[0] if numel else 0
    elif mode in ("shared", "sparse_shared"):
        book = raw[:5].copy() if numel >= 5 else raw
        raw = book[rng.integers(0, max(book.size, 1), size=numel)] if book.size else raw
    if mode in ("sparse", "sparse_shared"):
        raw[rng.random(numel) < draw(st.sampled_from([0.5, 0.92, 1.0]))] = 0
    t = from_bits(raw, name, shape)
    if mode == "special" and name in SPECIAL and numel:
        vals = torch.tensor(SPECIAL[name], dtype=torch.float64).to(DTYPES[name][0])
        t = vals[torch.from_numpy(rng.integers(0, vals.numel(), size=numel))].reshape(shape)
    return t


@settings(max_examples=150, deadline=None)
@given(t=tensors(), codec=st.sampled_from([None, "dense", "dense_planes", "sparse", "shared", "sparse_shared"]))
def test_every_codec_round_trips_bit_exactly(t, codec):
    name, bits = to_bits(t)
    try:
        enc = encode_bits(bits, codec)
    except ValueError:  # shared codecs do not apply to >65536 distinct values or all-zero tensors
        assert codec in ("shared", "sparse_shared", "dense_planes")
        return
    out = decode_bits(enc.codec, enc.params, list(enc.blobs), DTYPES[name][1], bits.size)
    assert _same_bits(from_bits(out, name, tuple(t.shape)), t)
    assert encode_bits(bits, codec) == enc  # deterministic


def test_negative_zero_counts_as_nonzero_and_nan_payloads_survive():
    # +0.0, -0.0, +0.0, a NaN with a payload, +0.0
    pattern = np.array([0, 0x80000000, 0, 0x7FC00001, 0] * 40, dtype=np.uint32)
    t = from_bits(pattern, "float32", (200,))
    name, bits = to_bits(t)
    assert np.array_equal(bits, pattern)
    for codec in ("sparse", "sparse_shared", None):
        enc = encode_bits(bits, codec)
        if codec:
            assert enc.params["nnz"] == 80
        out = from_bits(decode_bits(enc.codec, enc.params, list(enc.blobs), DTYPES[name][1], bits.size), name, t.shape)
        assert _same_bits(out, t)


def test_auto_choice_prefers_sparse_shared_for_pruned_and_shared_weights():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(100_000).astype(np.float32)
    centroids = np.sort(rng.standard_normal(32)).astype(np.float32)
    w = np.where(rng.random(w.size) < 0.08, centroids[rng.integers(0, 32, w.size)], 0).astype(np.float32)
    enc = encode_bits(w.view(np.uint32))
    assert enc.codec == "sparse_shared"
    # 8% density, 5-bit indices: about 0.08 * (5 + ~5 position bits) bits per weight; fp32 is 32
    assert enc.nbytes * 8 / w.size < 1.0
    trained_like = (0.05 * rng.standard_normal(10_000)).astype(np.float32)
    planes = encode_bits(trained_like.view(np.uint32))
    assert planes.codec == "dense_planes" and planes.nbytes < 0.95 * 4 * trained_like.size
    assert encode_bits(rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)).codec == "dense"
    dense_sparse = np.where(rng.random(1000) < 0.3, rng.standard_normal(1000), 0).astype(np.float32)
    assert encode_bits(dense_sparse.view(np.uint32)).codec == "sparse"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 5000), max_size=200, unique=True), st.integers(0, 10))
def test_gap_positions_round_trip(positions, extra):
    pos = np.array(sorted(positions), dtype=np.int64)
    numel = (int(pos[-1]) + 1 if pos.size else 0) + extra
    esc, syms = encode_positions(pos)
    assert np.array_equal(decode_positions(syms, esc, pos.size, numel), pos)


def test_gap_stream_out_of_range_is_a_format_error():
    esc, syms = encode_positions(np.array([3, 9]))
    with pytest.raises(FormatError):
        decode_positions(syms, esc, 2, 9)
    with pytest.raises(FormatError):
        decode_positions(syms, esc, 3, 100)


def test_bad_params_and_unknown_codec_are_format_errors():
    enc = encode_bits(np.array([0, 0, 3, 3, 0, 3], dtype=np.uint8), "sparse_shared")
    for key, value in [("k", 0), ("k", 10**9), ("nnz", -1), ("esc", "1"), ("nsym", 10**12)]:
        with pytest.raises(FormatError):
            decode_bits(enc.codec, dict(enc.params, **{key: value}), list(enc.blobs), np.dtype("uint8"), 6)
    with pytest.raises(FormatError, match="unknown codec"):
        decode_bits("pickle", {}, [], np.dtype("uint8"), 0)
    assert set(CODECS) >= {"dense", "sparse", "shared", "sparse_shared"}
