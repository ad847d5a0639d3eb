"""Entropy-coded symbol streams: the smaller of canonical Huffman and rANS, or a constant.

Every index and gap stream of a tensor codec goes through :func:`encode`.
The first byte names the coder (``CONSTANT``, ``HUFFMAN`` or ``RANS``); the
rest is that coder's body (docs/FORMAT.md). The caller knows how many symbols
a stream must hold and how large its alphabet may be, and :func:`decode`
enforces both before decoding, so a hostile stream cannot make it allocate
more than the tensor it belongs to.

Example:
    >>> import numpy as np
    >>> s = np.array([1, 1, 2, 1], dtype=np.int64)
    >>> decode(encode(s), count=4, alphabet=3).tolist()
    [1, 1, 2, 1]
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import FormatError
from . import ans, huffman
from .reader import Reader

CONSTANT, HUFFMAN, RANS = 0, 1, 2
CODER_NAMES = {CONSTANT: "constant", HUFFMAN: "huffman", RANS: "rans"}


def encode(symbols: np.ndarray) -> bytes:
    """Encode non-negative integer symbols (< 2**20) with the coder that gives the fewest bytes.

    Example:
        >>> len(encode(np.zeros(10**6, dtype=np.int64)))
        5
    """
    flat = np.asarray(symbols).reshape(-1).astype(np.int64, copy=False)
    if flat.size == 0:
        return struct.pack("<BI", CONSTANT, 0)
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= huffman.MAX_ALPHABET:
        raise ValueError(f"stream symbols must lie in [0, {huffman.MAX_ALPHABET}); got [{lo}, {hi}]")
    if lo == hi:
        return struct.pack("<BI", CONSTANT, lo)
    counts = np.bincount(flat)
    candidates = [bytes([HUFFMAN]) + huffman.encode_with_lengths(flat, huffman.code_lengths(counts))]
    if counts.size <= ans.MAX_ALPHABET and int((counts > 0).sum()) <= ans.MAX_ALPHABET // 2:
        candidates.append(bytes([RANS]) + ans.encode_with_freqs(flat, ans.quantize(counts)))
    return min(candidates, key=len)  # ties keep Huffman: its decoder is the simpler one


def coder_of(data: bytes) -> str:
    """The name of the coder a stream uses (for reports).

    Example:
        >>> coder_of(encode(np.array([0, 1, 1])))
        'huffman'
    """
    return CODER_NAMES.get(data[0], "unknown") if data else "empty"


def decode(data: bytes, count: int, alphabet: int) -> np.ndarray:
    """Decode exactly ``count`` symbols, each below ``alphabet``, as int64; else FormatError.

    Example:
        >>> decode(encode(np.array([4, 4])), count=2, alphabet=4)
        Traceback (most recent call last):
        ...
        deepshrink.errors.FormatError: symbol stream: symbol 4 is outside the alphabet [0, 4)
    """
    r = Reader(data, "symbol stream")
    tag = r.u8()
    if tag == CONSTANT:
        value = r.u32()
        r.done()
        if count and value >= alphabet:
            raise FormatError(f"symbol stream: symbol {value} is outside the alphabet [0, {alphabet})")
        return np.full(count, value, dtype=np.int64)
    if tag == HUFFMAN:
        if count > 8 * len(data):  # every Huffman code is at least one bit
            raise FormatError(f"symbol stream: {len(data)} bytes cannot hold {count} Huffman codes")
        out = huffman.decode_body(r, count)
    elif tag == RANS:
        out = ans.decode_body(r, count)
    else:
        raise FormatError(f"symbol stream: unknown coder tag {tag} (known: {sorted(CODER_NAMES)})")
    r.done()
    if out.size and int(out.max()) >= alphabet:
        raise FormatError(f"symbol stream: symbol {int(out.max())} is outside the alphabet [0, {alphabet})")
    return out
