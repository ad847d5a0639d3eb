"""Canonical Huffman coding, vectorised with numpy (the baseline entropy coder).

``encode(symbols) -> bytes`` and ``decode(data) -> np.ndarray`` round-trip
exactly (values and dtype). Symbols are non-negative integers below
``MAX_ALPHABET``. Codes are canonical (RFC 1951 order: by length, then by
symbol) and at most ``MAX_LEN`` bits, so only the code lengths are stored.
The stream is split into interleaved lanes (see :mod:`.lanes`) so that the
numpy path packs bits with array arithmetic and decodes one symbol of every
lane per vectorised step; where numba is installed, compiled kernels
(:mod:`._fast`) run the same code symbol by symbol and write identical bytes
(``fast=False`` forces numpy). The byte layout is specified in docs/FORMAT.md.

Example:
    >>> import numpy as np
    >>> from deepshrink.codec import huffman
    >>> s = np.array([0, 0, 0, 1, 2, 0], dtype=np.uint8)
    >>> bool((huffman.decode(huffman.encode(s)) == s).all())
    True
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import FormatError
from . import _fast
from .lanes import check_lanes, check_symbols, dtype_code, dtype_from_code, lane_major, lanes_for
from .reader import Reader, deflate

VERSION = 1
MAX_LEN = 20
MAX_ALPHABET = 1 << MAX_LEN
_INVALID = np.uint64(1 << 40)  # length given to table slots no code owns: the lane overruns and fails its check


def _minimum_redundancy(freqs: list[int]) -> list[int]:
    """Huffman code lengths for frequencies sorted ascending (Moffat & Katajainen, in place, O(n))."""
    a = list(freqs)
    n = len(a)
    a[0] += a[1]
    root, leaf = 0, 2
    for nxt in range(1, n - 1):
        if leaf >= n or a[root] < a[leaf]:
            a[nxt] = a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] = a[leaf]
            leaf += 1
        if leaf >= n or (root < nxt and a[root] < a[leaf]):
            a[nxt] += a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] += a[leaf]
            leaf += 1
    a[n - 2] = 0
    for nxt in range(n - 3, -1, -1):
        a[nxt] = a[a[nxt]] + 1
    avail, used, depth, root, nxt = 1, 0, 0, n - 2, n - 1
    while avail > 0:
        while root >= 0 and a[root] == depth:
            used += 1
            root -= 1
        while avail > used:
            a[nxt] = depth
            nxt -= 1
            avail -= 1
        avail, depth, used = 2 * used, depth + 1, 0
    return a


def code_lengths(counts: np.ndarray, max_len: int = MAX_LEN) -> np.ndarray:
    """Length-limited Huffman code lengths (uint8, 0 for absent symbols) for symbol counts.

    Example:
        >>> code_lengths(np.array([5, 1, 1, 0])).tolist()
        [1, 2, 2, 0]
    """
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(counts.size, dtype=np.uint8)
    present = np.flatnonzero(counts)
    if present.size == 0:
        return lengths
    if present.size == 1:
        lengths[present] = 1  # one symbol still needs a 1-bit code so that the count is recoverable
        return lengths
    order = present[np.argsort(counts[present], kind="stable")]
    lens = _minimum_redundancy(counts[order].tolist())
    if max(lens) > max_len:
        lens = _limit(lens, max_len)
    lengths[order] = lens
    return lengths


def _limit(lens: list[int], max_len: int) -> list[int]:
    """Clamp lengths (ascending-frequency order) to ``max_len`` and lengthen rare codes until Kraft holds."""
    lens = [min(x, max_len) for x in lens]
    budget = 1 << max_len
    kraft = sum(1 << (max_len - x) for x in lens)
    while kraft > budget:
        for i, x in enumerate(lens):  # rarest first: lengthening them costs the fewest bits
            if x < max_len:
                lens[i] = x + 1
                kraft -= 1 << (max_len - x - 1)
                if kraft <= budget:
                    break
    return lens


def canonical_codes(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical codes for code lengths: (codes, order), codes[s] is symbol s's code value.

    Codes are assigned by increasing length, ties by increasing symbol.

    Example:
        >>> canonical_codes(np.array([1, 2, 2], dtype=np.uint8))[0].tolist()
        [0, 2, 3]
    """
    lengths = np.asarray(lengths).astype(np.int64)
    present = np.flatnonzero(lengths)
    order = present[np.lexsort((present, lengths[present]))]
    max_len = int(lengths.max()) if present.size else 0
    span = np.left_shift(np.int64(1), max_len - lengths[order])
    start = np.cumsum(span) - span  # Kraft position of each code, in units of 2**-max_len
    codes = np.zeros(lengths.size, dtype=np.int64)
    codes[order] = start >> (max_len - lengths[order])
    return codes, order


def encode(symbols: np.ndarray, *, fast: bool = True) -> bytes:
    """Canonical-Huffman encode an integer array (any shape; decoded flat, same dtype).

    ``fast=False`` uses the numpy path even where numba is installed (same bytes).

    Example:
        >>> len(encode(np.zeros(1000, dtype=np.int64))) < 200
        True
    """
    arr = np.asarray(symbols)
    code = dtype_code(arr)
    flat = check_symbols(arr, MAX_ALPHABET)
    n = flat.size
    head = struct.pack("<BBQ", VERSION, code, n)
    if n == 0:
        return head + struct.pack("<I", 0)
    counts = np.bincount(flat)
    lengths = code_lengths(counts)
    return head + encode_with_lengths(flat, lengths, counts, fast=fast)


def encode_with_lengths(
    flat: np.ndarray, lengths: np.ndarray, counts: np.ndarray | None = None, *, fast: bool = True
) -> bytes:
    """Encode int64 symbols with given code lengths: alphabet, table, lanes and bits (FORMAT.md).

    ``counts`` (``np.bincount(flat)``, if the caller has it) saves a pass.
    """
    alphabet = lengths.size
    table = deflate(lengths.astype(np.uint8).tobytes())
    codes, _ = canonical_codes(lengths)
    if counts is None:
        counts = np.bincount(flat, minlength=alphabet)
    lanes = lanes_for(flat.size, float(np.dot(counts[:alphabet], lengths[: counts.size].astype(np.int64))) / 8)
    if fast and _fast.available():
        len_tab = lengths.astype(np.int64)
        lane_bits = _fast.lane_bits(flat, len_tab, lanes)
        bits = _fast.huffman_pack(flat, len_tab, codes.astype(np.uint32), lanes, lane_bits)
    else:
        # a sentinel symbol with length 0 pads the last step of the lane matrix
        len_tab = np.append(lengths.astype(np.int64), 0)
        code_tab = np.append(codes, 0).astype(np.uint64)
        lm = lane_major(flat, lanes, fill=alphabet)
        lens = len_tab[lm]
        lane_bits = lens.reshape(lanes, -1).sum(axis=1)
        bits = pack_codes(code_tab[lm], lens)
    return b"".join(
        [
            struct.pack("<II", alphabet, len(table)),
            table,
            struct.pack("<I", lanes),
            lane_bits.astype("<u4").tobytes(),
            bits,
        ]
    )


def pack_codes(codes: np.ndarray, lens: np.ndarray) -> bytes:
    """Concatenate codes (uint64 values, int64 lengths <= 32) MSB-first into bytes.

    Codes never overlap, so OR equals ADD and ``np.bincount`` can sum each
    32-bit word's pieces exactly in float64 (every sum is below 2**32).

    Example:
        >>> pack_codes(np.array([1, 2], dtype=np.uint64), np.array([1, 3])).hex()
        'a0'
    """
    total = int(lens.sum())
    if total == 0:
        return b""
    off = np.cumsum(lens) - lens
    word = off >> 5
    shift = (64 - (off & 31) - lens).astype(np.uint64)
    v = np.left_shift(codes, shift)
    nwords = (total + 31) >> 5
    hi = np.bincount(word, weights=(v >> np.uint64(32)).astype(np.float64), minlength=nwords + 1)
    lo = np.bincount(word + 1, weights=(v & np.uint64(0xFFFFFFFF)).astype(np.float64), minlength=nwords + 1)
    words = (hi[:nwords] + lo[:nwords]).astype(np.uint32)
    return words.astype(">u4").tobytes()[: (total + 7) >> 3]


def decode(data: bytes, *, fast: bool = True) -> np.ndarray:
    """Decode :func:`encode`'s bytes; any malformed input raises FormatError.

    ``fast=False`` uses the numpy path even where numba is installed (same result).

    Example:
        >>> decode(encode(np.array([3, 1, 3], dtype=np.int16))).tolist()
        [3, 1, 3]
    """
    r = Reader(data, "huffman stream")
    version = r.u8()
    if version != VERSION:
        raise FormatError(f"huffman stream: unsupported version {version} (this build reads {VERSION})")
    dtype = dtype_from_code(r.u8(), "huffman stream")
    n = r.u64()
    out = decode_body(r, n, fast=fast)
    r.done()
    return out.astype(dtype)


def decode_body(r: Reader, n: int, *, fast: bool = True) -> np.ndarray:
    """Decode alphabet, table, lanes and bits for ``n`` symbols from ``r`` (int64 result)."""
    alphabet = r.u32()
    if n == 0:
        if alphabet != 0:
            raise FormatError("huffman stream: an empty stream must declare alphabet 0")
        return np.zeros(0, dtype=np.int64)
    if not 1 <= alphabet <= MAX_ALPHABET:
        raise FormatError(f"huffman stream: alphabet size {alphabet} outside [1, {MAX_ALPHABET}]")
    lengths = np.frombuffer(r.zlib_block(alphabet), dtype=np.uint8).astype(np.int64)
    if lengths.size != alphabet:
        raise FormatError(f"huffman stream: code table has {lengths.size} lengths, alphabet is {alphabet}")
    max_len = int(lengths.max())
    if max_len == 0 or max_len > MAX_LEN:
        raise FormatError(f"huffman stream: code lengths must lie in [1, {MAX_LEN}] for some symbol; max is {max_len}")
    kraft = int(np.sum(np.left_shift(1, max_len - lengths[lengths > 0])))
    if kraft > (1 << max_len):
        raise FormatError("huffman stream: code lengths violate the Kraft inequality (over-full code)")
    lanes = r.u32()
    steps = check_lanes(lanes, n, "huffman stream")
    lane_bits = r.array("uint32", lanes).astype(np.int64)
    steps = -(-n // lanes)
    per_lane = np.full(lanes, steps, dtype=np.int64)
    per_lane[n - (steps - 1) * lanes :] -= 1  # the last step is partial
    if np.any(lane_bits < per_lane) or np.any(lane_bits > per_lane * max_len):
        raise FormatError("huffman stream: a lane's bit count cannot hold its symbols")
    total = int(lane_bits.sum())
    raw = r.take((total + 7) >> 3)
    if fast and _fast.available():
        err, out = _fast.huffman_decode(raw, lengths, max_len, lane_bits, n, lanes)
        if err == _fast.ERR_INVALID:
            raise FormatError("huffman stream: corrupt bits (a bit pattern matches no code of the table)")
        if err != _fast.OK:
            raise FormatError("huffman stream: corrupt bits (a lane does not end where its bit count says)")
        return out
    return _decode_lanes(raw, lengths, max_len, lane_bits, n, lanes, steps)


def _decode_lanes(
    raw: bytes, lengths: np.ndarray, max_len: int, lane_bits: np.ndarray, n: int, lanes: int, steps: int
) -> np.ndarray:
    codes, order = canonical_codes(lengths)
    span = np.left_shift(1, max_len - lengths[order])
    filled = int(span.sum())
    lut_sym = np.zeros(1 << max_len, dtype=np.int64)
    lut_len = np.full(1 << max_len, _INVALID, dtype=np.uint64)
    lut_sym[:filled] = np.repeat(order, span)
    lut_len[:filled] = np.repeat(lengths[order], span).astype(np.uint64)
    nwords = (len(raw) + 3) >> 2
    w32 = np.zeros(nwords + 2, dtype=np.uint64)
    w32[:nwords] = np.frombuffer(raw + bytes(nwords * 4 - len(raw)), dtype=">u4")
    w64 = (w32[:-1] << np.uint64(32)) | w32[1:]  # the 64 bits starting at each 32-bit word
    last = np.uint64(nwords)
    ends = np.cumsum(lane_bits).astype(np.uint64)
    pos = ends - lane_bits.astype(np.uint64)
    out = np.empty(steps * lanes, dtype=np.int64)
    drop = np.uint64(64 - max_len)
    five, mask = np.uint64(5), np.uint64(31)
    for t in range(steps):
        k = lanes if t < steps - 1 else n - t * lanes
        p = pos[:k]
        win = (w64[np.minimum(p >> five, last)] << (p & mask)) >> drop
        out[t * lanes : t * lanes + k] = lut_sym[win]
        p += lut_len[win]
    if not np.array_equal(pos, ends):
        raise FormatError("huffman stream: corrupt bits (a lane does not end where its bit count says)")
    return out[:n]
