"""Compiled coder kernels: same bytes as the numpy paths, same verdict on hostile streams, and fast.

The issue's target is 50 M symbols/s for encode and decode; the speed test
asserts half of it (a shared CI machine) on a 2M-symbol stream after a warm-up.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepshrink.codec import _fast, ans, huffman
from deepshrink.errors import FormatError

pytestmark = pytest.mark.skipif(not _fast.available(), reason="numba is not installed: only the numpy path exists")

CODERS = [huffman, ans]


def _outcome(mod, data: bytes, fast: bool):
    """The decoded array, or the string 'FormatError' (any other exception propagates)."""
    try:
        return mod.decode(data, fast=fast)
    except FormatError:
        return "FormatError"


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.dtype == b.dtype and np.array_equal(a, b)


@settings(max_examples=80, deadline=None)
@given(
    coder=st.sampled_from(CODERS),
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.int64]),
    data=st.data(),
)
def test_fast_and_numpy_paths_write_identical_bytes(coder, dtype, data):
    n = data.draw(st.integers(0, 20_000))
    top = data.draw(st.sampled_from([1, 2, 3, 16, 200, 256]))
    skew = data.draw(st.booleans())
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if skew:  # geometric-like: long codes and many renormalisation-free steps
        s = np.minimum(rng.geometric(0.4, n) - 1, top - 1)
    else:
        s = rng.integers(0, top, n)
    s = s.astype(dtype)
    fast, slow = coder.encode(s, fast=True), coder.encode(s, fast=False)
    assert fast == slow
    for path in (True, False):
        out = coder.decode(fast, fast=path)
        assert out.dtype == s.dtype and np.array_equal(out, s)


@settings(max_examples=40, deadline=None)
@given(coder=st.sampled_from(CODERS), arr=hnp.arrays(np.uint8, st.integers(1, 500), elements=st.integers(0, 40)))
def test_fast_and_numpy_paths_agree_on_small_hypothesis_arrays(coder, arr):
    assert coder.encode(arr, fast=True) == coder.encode(arr, fast=False)


def _mutants(data: bytes, rng: np.random.Generator, count: int):
    """Bit flips, byte overwrites, truncations and duplications of a valid stream."""
    b = np.frombuffer(data, dtype=np.uint8)
    for i in range(count):
        m = b.copy()
        kind = i % 4
        if kind == 0:
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, m.size))
                m[pos] ^= np.uint8(1 << int(rng.integers(0, 8)))
            yield m.tobytes()
        elif kind == 1:
            pos = int(rng.integers(0, m.size))
            m[pos] = rng.integers(0, 256)
            yield m.tobytes()
        elif kind == 2:
            yield data[: int(rng.integers(0, len(data)))]
        else:
            a = int(rng.integers(0, len(data)))
            c = int(rng.integers(a, min(len(data), a + 16) + 1))
            yield data[:c] + data[a:c] + data[c:]


@pytest.mark.parametrize("coder", CODERS, ids=["huffman", "rans"])
@pytest.mark.parametrize("kind", ["skewed", "uniform", "long_codes"])
def test_hostile_streams_get_the_same_verdict_from_both_paths(coder, kind):
    rng = np.random.default_rng(7)
    n = 500  # the numpy decoder takes one Python step per symbol of a 1-lane stream
    if kind == "skewed":
        s = np.where(rng.random(n) < 0.1, rng.integers(1, 20, n), 0)
    elif kind == "uniform":
        s = rng.integers(0, 256, n)
    else:  # Fibonacci-like counts give Huffman codes longer than the 11-bit lookup table
        counts = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377]  # codes up to 13 bits
        s = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    data = coder.encode(s.astype(np.uint16))
    verdicts = {"ok": 0, "error": 0}
    for m in _mutants(data, rng, 600):
        a, b = _outcome(coder, m, True), _outcome(coder, m, False)
        assert _same(a, b)
        verdicts["error" if isinstance(a, str) else "ok"] += 1
    assert verdicts["error"] > 50  # the mutants did exercise the error paths


def test_long_huffman_codes_use_the_slow_path_and_round_trip():
    counts = [1 << k for k in range(20)] + [1]  # code lengths up to 20 bits
    rng = np.random.default_rng(1)
    s = rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int32)
    data = huffman.encode(s)
    assert int(huffman.code_lengths(np.bincount(s)).max()) == 20
    assert data == huffman.encode(s, fast=False)
    assert np.array_equal(huffman.decode(data), s)


def test_incomplete_code_table_raises_in_the_fast_decoder():
    # a stream whose code table is valid but whose bits hit an unassigned code
    s = np.array([0, 1, 2] * 50, dtype=np.uint8)
    lengths = np.array([1, 3, 3], dtype=np.uint8)  # Kraft sum 3/4: codes 110.. and 111.. are unused
    flat = s.astype(np.int64)
    body = huffman.encode_with_lengths(flat, lengths)
    good = bytes([huffman.VERSION, 0]) + len(s).to_bytes(8, "little") + body
    assert np.array_equal(huffman.decode(good), s)
    bad = bytearray(good)
    bad[-1] = 0xFF  # the last bits become 111... which no code owns
    for path in (True, False):
        with pytest.raises(FormatError):
            huffman.decode(bytes(bad), fast=path)


_NO_NUMBA = """
import sys
sys.modules["numba"] = None  # makes `import numba` fail, as where it is not installed
import numpy as np
from deepshrink.codec import _fast, ans, huffman
assert not _fast.available()
s = np.where(np.random.default_rng(3).random(50_000) < 0.1, np.arange(50_000) % 40, 0).astype(np.int64)
for mod in (huffman, ans):
    data = mod.encode(s)
    assert np.array_equal(mod.decode(data), s)
    sys.stdout.write(data.hex() + "\\n")
"""


def test_without_numba_the_numpy_path_writes_the_same_bytes():
    res = subprocess.run([sys.executable, "-c", _NO_NUMBA], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    s = np.where(np.random.default_rng(3).random(50_000) < 0.1, np.arange(50_000) % 40, 0).astype(np.int64)
    assert res.stdout.split() == [huffman.encode(s).hex(), ans.encode(s).hex()]


def _rate(fn, arg, n: int) -> float:
    fn(arg)  # warm-up: JIT compile or cache load
    best = min(_timed(fn, arg) for _ in range(5))
    return n / best / 1e6


def _timed(fn, arg) -> float:
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


@pytest.mark.parametrize("coder", CODERS, ids=["huffman", "rans"])
def test_encode_and_decode_run_at_25_million_symbols_per_second(coder):
    rng = np.random.default_rng(0)
    n = 2_000_000
    s = np.where(rng.random(n) < 0.05, rng.integers(1, 32, n), 0).astype(np.int64)
    data = coder.encode(s)
    enc, dec = _rate(coder.encode, s, n), _rate(coder.decode, data, n)
    assert enc >= 25, f"encode {enc:.1f} M symbols/s"
    assert dec >= 25, f"decode {dec:.1f} M symbols/s"
