"""Interleaved rANS (range asymmetric numeral systems), vectorised with numpy.

rANS reaches the order-0 entropy where Huffman cannot (a symbol of
probability 0.9 costs 0.15 bit, not 1 bit). Each of ``K`` interleaved lanes
has a 32-bit state in ``[2**16, 2**32)`` and emits 16-bit words; frequencies
are quantised to ``2**PREC``. With ``PREC = 16`` a lane emits at most one word
per symbol, so one numpy step encodes or decodes one symbol of every lane.
Every lane starts (encoder) and must end (decoder) in state ``2**16``: a free
integrity check. Where numba is installed, compiled kernels (:mod:`._fast`)
run the same lanes symbol by symbol and write identical bytes (``fast=False``
forces numpy). The byte layout is specified in docs/FORMAT.md.

Example:
    >>> import numpy as np
    >>> from deepshrink.codec import ans
    >>> s = np.array([0, 0, 0, 1, 0, 0, 2, 0], dtype=np.uint8)
    >>> bool((ans.decode(ans.encode(s)) == s).all())
    True
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import FormatError
from . import _fast
from .lanes import check_lanes, check_symbols, dtype_code, dtype_from_code, lanes_for
from .reader import Reader, deflate

VERSION = 1
PREC = 16
MAX_ALPHABET = 1 << PREC
_LOW = 1 << 16  # lower bound of a lane state, and every lane's start and end state
_WORD = 16
DEFAULT_MAX_COUNT = 1 << 28


def quantize(counts: np.ndarray, prec: int = PREC) -> np.ndarray:
    """Integer frequencies summing to ``2**prec``, >= 1 for every present symbol, close to ``counts``.

    Needs at least two symbols in the alphabet (callers pad a one-symbol alphabet).

    Example:
        >>> quantize(np.array([3, 1]), prec=4).tolist()
        [12, 4]
    """
    counts = np.asarray(counts, dtype=np.int64)
    total_m = 1 << prec
    n = int(counts.sum())
    present = counts > 0
    if int(present.sum()) > total_m:
        raise ValueError(f"{int(present.sum())} distinct symbols do not fit a 2**{prec} frequency table")
    exact = counts * total_m / n
    freq = np.where(present, np.maximum(1, np.floor(exact)), 0).astype(np.int64)
    diff = total_m - int(freq.sum())
    if diff > 0:  # hand the rest to the symbols that lost the most by flooring
        order = np.argsort(-(exact - freq), kind="stable")
        freq[order[:diff]] += 1
    while diff < 0:  # too many symbols were lifted to 1: take from the most frequent
        order = np.argsort(-freq, kind="stable")
        take = min(-diff, int((freq > 1).sum()))
        freq[order[:take]] -= 1
        diff += take
    return freq


def encode(symbols: np.ndarray, *, fast: bool = True) -> bytes:
    """rANS-encode an integer array with symbols in ``[0, 65536)`` (decoded flat, same dtype).

    ``fast=False`` uses the numpy path even where numba is installed (same bytes).

    Example:
        >>> len(encode(np.array([0] * 9000 + [1] * 1000, dtype=np.int32))) < 700
        True
    """
    arr = np.asarray(symbols)
    code = dtype_code(arr)
    flat = check_symbols(arr, MAX_ALPHABET)
    n = flat.size
    head = struct.pack("<BBQ", VERSION, code, n)
    if n == 0:
        return head + struct.pack("<I", 0)
    real = np.bincount(flat, minlength=2)  # two symbols at least: a lone symbol keeps freq < 2**PREC
    counts = real
    if int((counts > 0).sum()) == 1:
        counts = counts.copy()
        counts[0 if counts[0] == 0 else 1] = 1  # a phantom count, never coded
    return head + encode_with_freqs(flat, quantize(counts), real, fast=fast)


def encode_with_freqs(
    flat: np.ndarray, freq: np.ndarray, counts: np.ndarray | None = None, *, fast: bool = True
) -> bytes:
    """Encode int64 symbols with a quantised frequency table: alphabet, table, lanes, states, words.

    ``counts`` (``np.bincount(flat)``, if the caller has it) saves a pass.
    """
    n = flat.size
    if counts is None or counts.size != freq.size:
        counts = np.bincount(flat, minlength=freq.size)
    est_bits = float(np.sum(counts * (PREC - np.log2(np.maximum(freq, 1)))))
    lanes = lanes_for(n, est_bits / 8)
    if fast and _fast.available():
        x, words = _fast.rans_encode(flat, freq, lanes, _LOW)
        return _layout(freq, lanes, x, words)
    steps = -(-n // lanes)
    f_tab = freq.astype(np.uint64)
    c_tab = (np.cumsum(freq) - freq).astype(np.uint64)
    x = np.full(lanes, _LOW, dtype=np.uint64)
    chunks: list[np.ndarray] = []
    shift_hi = np.uint64(32 - PREC)
    word, prec = np.uint64(_WORD), np.uint64(PREC)
    low_mask = np.uint64((1 << _WORD) - 1)
    for t in range(steps - 1, -1, -1):  # rANS is last-in first-out: encode backwards
        k = min(lanes, n - t * lanes)
        s = flat[t * lanes : t * lanes + k]
        xs = x[:k]
        f = f_tab[s]
        m = xs >= (f << shift_hi)
        chunks.append((xs[m] & low_mask).astype(np.uint16))
        np.right_shift(xs, word, out=xs, where=m)
        q = np.floor(xs / f).astype(np.uint64)  # exact: xs < 2**32 and f < 2**16 in float64
        xs[:] = (q << prec) + (xs - q * f) + c_tab[s]
    words = np.concatenate(chunks[::-1]) if chunks else np.zeros(0, dtype=np.uint16)
    return _layout(freq, lanes, x, words)


def _layout(freq: np.ndarray, lanes: int, x: np.ndarray, words: np.ndarray) -> bytes:
    """Alphabet, precision, table, lanes, final states and words, as FORMAT.md lays them out."""
    table = deflate(freq.astype("<u2").tobytes())
    return b"".join(
        [
            struct.pack("<IBI", freq.size, PREC, len(table)),
            table,
            struct.pack("<I", lanes),
            x.astype("<u4").tobytes(),
            struct.pack("<Q", words.size),
            words.astype("<u2").tobytes(),
        ]
    )


def decode(data: bytes, max_count: int = DEFAULT_MAX_COUNT, *, fast: bool = True) -> np.ndarray:
    """Decode :func:`encode`'s bytes; malformed input (or more than ``max_count`` symbols) raises FormatError.

    ``fast=False`` uses the numpy path even where numba is installed (same result).

    Example:
        >>> decode(encode(np.array([5, 5, 1], dtype=np.uint16))).tolist()
        [5, 5, 1]
    """
    r = Reader(data, "rANS stream")
    version = r.u8()
    if version != VERSION:
        raise FormatError(f"rANS stream: unsupported version {version} (this build reads {VERSION})")
    dtype = dtype_from_code(r.u8(), "rANS stream")
    n = r.u64()
    if n > max_count:
        raise FormatError(f"rANS stream: declares {n} symbols, more than the allowed {max_count}")
    out = decode_body(r, n, fast=fast)
    r.done()
    return out.astype(dtype)


def decode_body(r: Reader, n: int, *, fast: bool = True) -> np.ndarray:
    """Decode alphabet, table, lanes, states and words for ``n`` symbols from ``r`` (int64 result)."""
    alphabet = r.u32()
    if n == 0:
        if alphabet != 0:
            raise FormatError("rANS stream: an empty stream must declare alphabet 0")
        return np.zeros(0, dtype=np.int64)
    if not 2 <= alphabet <= MAX_ALPHABET:
        raise FormatError(f"rANS stream: alphabet size {alphabet} outside [2, {MAX_ALPHABET}]")
    prec = r.u8()
    if prec != PREC:
        raise FormatError(f"rANS stream: precision {prec} unsupported (this build reads {PREC})")
    freq = np.frombuffer(r.zlib_block(2 * alphabet), dtype="<u2").astype(np.int64)
    if freq.size != alphabet or int(freq.sum()) != 1 << PREC:
        raise FormatError(f"rANS stream: frequency table must hold {alphabet} counts summing to 2**{PREC}")
    lanes = r.u32()
    steps = check_lanes(lanes, n, "rANS stream")
    x = r.array("uint32", lanes).astype(np.uint64)
    if np.any(x < _LOW):
        raise FormatError(f"rANS stream: a lane state is below 2**16 (corrupt state)")
    nwords = r.u64()
    words = r.array("uint16", nwords) if nwords <= r.remaining() // 2 else r.take(2 * nwords)
    if fast and _fast.available():
        err, out = _fast.rans_decode(x, words, freq, n, lanes, _LOW)
        if err == _fast.ERR_OVERRUN:
            raise FormatError("rANS stream: corrupt data (the lanes ask for more words than the stream has)")
        if err != _fast.OK:
            raise FormatError("rANS stream: corrupt data (lanes do not end in their start state)")
        return out
    return _decode_lanes(x, words.astype(np.uint64), freq, n, lanes)


def _decode_lanes(x: np.ndarray, words: np.ndarray, freq: np.ndarray, n: int, lanes: int) -> np.ndarray:
    f_tab = freq.astype(np.uint64)
    c_tab = (np.cumsum(freq) - freq).astype(np.uint64)
    slot_sym = np.repeat(np.arange(freq.size, dtype=np.int64), freq)
    steps = -(-n // lanes)
    out = np.empty(n, dtype=np.int64)
    mask, prec, word = np.uint64((1 << PREC) - 1), np.uint64(PREC), np.uint64(_WORD)
    low = np.uint64(_LOW)
    ptr, nwords = 0, words.size
    for t in range(steps):
        k = min(lanes, n - t * lanes)
        xs = x[:k]
        slot = xs & mask
        s = slot_sym[slot]
        out[t * lanes : t * lanes + k] = s
        xs[:] = f_tab[s] * (xs >> prec) + slot - c_tab[s]
        m = xs < low
        need = int(np.count_nonzero(m))
        if need:
            if ptr + need > nwords:
                raise FormatError("rANS stream: corrupt data (the lanes ask for more words than the stream has)")
            xs[m] = (xs[m] << word) | words[ptr : ptr + need]
            ptr += need
    if ptr != nwords or np.any(x != low):
        raise FormatError("rANS stream: corrupt data (lanes do not end in their start state)")
    return out
