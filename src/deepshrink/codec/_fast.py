"""Compiled (numba) per-symbol loops of the entropy coders: the fast path of :mod:`.huffman` and :mod:`.ans`.

The numpy paths in those modules process one symbol of every lane per
vectorised step; that is fast only when there are thousands of lanes. These
kernels run the same lane-interleaved codes symbol by symbol in compiled code
and write byte-identical streams (tests/test_codec_speed.py checks both paths
against each other, hostile streams included).

Safety: numba does not bounds-check arrays, so every decoder index is proven
in range by an explicit check against a value the caller validated, and a
kernel returns an error code (never raises, never reads out of bounds) that
the Python wrapper turns into FormatError. Each kernel's loop count is the
symbol count the caller already validated, so no input can make it spin.

``available()`` is False when numba is not installed; callers then use numpy.

Example:
    >>> import numpy as np
    >>> from deepshrink.codec import _fast
    >>> s, lens = np.array([0, 1, 0], dtype=np.int64), np.array([1, 2], dtype=np.int64)
    >>> _fast.lane_bits(s, lens, 2).tolist()  # lane 0 holds symbols 0 and 0, lane 1 symbol 1
    [2, 2]
"""

from __future__ import annotations

import numpy as np

try:  # numba is what makes the coders fast; without it the numpy paths still work
    from numba import njit
except ImportError:  # pragma: no cover - exercised only where numba is absent
    njit = None

OK = 0
ERR_OVERRUN = 1  # a lane's codes run past the lane's declared bit count (or the words run out)
ERR_INVALID = 2  # bits match no code of an incomplete code table
ERR_END = 3  # a lane does not end where it must (bit count / start state)
ERR_SYMBOL = 4  # encoder: a symbol outside the table, or one with no code


def available() -> bool:
    """Whether the compiled kernels can be used (numba imports).

    Example:
        >>> isinstance(available(), bool)
        True
    """
    return njit is not None


def _jit(fn):
    return njit(cache=True, nogil=True)(fn) if njit is not None else fn


# ---------------------------------------------------------------- Huffman


@_jit
def _lane_bits(flat, len_tab, lanes):  # pragma: no cover - compiled
    out = np.zeros(lanes, dtype=np.int64)
    n = flat.size
    j = 0
    for i in range(n):
        out[j] += len_tab[flat[i]]
        j += 1
        if j == lanes:
            j = 0
    return out


def lane_bits(flat: np.ndarray, len_tab: np.ndarray, lanes: int) -> np.ndarray:
    """Total code bits of each lane (symbol ``i`` is in lane ``i % lanes``).

    Example:
        >>> lane_bits(np.array([0, 1, 1], dtype=np.int64), np.array([1, 3], dtype=np.int64), 2).tolist()
        [4, 3]
    """
    return _lane_bits(flat, len_tab, lanes)


@_jit
def _huffman_pack(flat, len_tab, code_tab, lanes, starts, out):  # pragma: no cover - compiled
    # One MSB-first bit writer per lane, all advanced step by step (sequential
    # reads of ``flat``). A lane starts mid-byte, so bytes are ORed into the
    # zeroed buffer: a boundary byte gets its bits from two lanes.
    n = flat.size
    alphabet = len_tab.size
    acc = np.zeros(lanes, dtype=np.uint64)
    nacc = np.zeros(lanes, dtype=np.int64)
    bptr = np.zeros(lanes, dtype=np.int64)
    for j in range(lanes):
        nacc[j] = starts[j] & 7  # as if the lane's first byte began with that many zero bits
        bptr[j] = starts[j] >> 3
    j = 0
    for i in range(n):
        s = flat[i]
        if s < 0 or s >= alphabet or len_tab[s] == 0:
            return ERR_SYMBOL
        ln = len_tab[s]
        a = (acc[j] << np.uint64(ln)) | np.uint64(code_tab[s])
        k = nacc[j] + ln
        if k >= 32:
            b = bptr[j]
            k -= 32
            w = a >> np.uint64(k)
            out[b] |= np.uint8((w >> np.uint64(24)) & np.uint64(255))
            out[b + 1] = np.uint8((w >> np.uint64(16)) & np.uint64(255))
            out[b + 2] = np.uint8((w >> np.uint64(8)) & np.uint64(255))
            out[b + 3] = np.uint8(w & np.uint64(255))
            bptr[j] = b + 4
            a &= (np.uint64(1) << np.uint64(k)) - np.uint64(1)
        acc[j] = a
        nacc[j] = k
        j += 1
        if j == lanes:
            j = 0
    for j in range(lanes):  # flush: whole bytes, then the last partial byte left-aligned
        a = acc[j]
        k = nacc[j]
        b = bptr[j]
        while k > 0:
            if k >= 8:
                k -= 8
                out[b] |= np.uint8((a >> np.uint64(k)) & np.uint64(255))
            else:
                out[b] |= np.uint8((a << np.uint64(8 - k)) & np.uint64(255))
                k = 0
            b += 1
    return OK


def huffman_pack(
    flat: np.ndarray, len_tab: np.ndarray, code_tab: np.ndarray, lanes: int, per_lane: np.ndarray
) -> bytes:
    """The bit payload: each lane's codes MSB-first, lanes one after another.

    ``per_lane`` is :func:`lane_bits`' result. Raises ValueError for a symbol
    the table has no code for.

    Example:
        >>> lens, codes = np.array([1, 2, 2]), np.array([0, 2, 3], dtype=np.uint32)
        >>> s = np.array([1, 0, 2], dtype=np.int64)
        >>> huffman_pack(s, lens, codes, 1, lane_bits(s, lens, 1)).hex()  # 10 0 11, padded
        '98'
    """
    total = int(per_lane.sum())
    starts = np.cumsum(per_lane) - per_lane
    nbytes = (total + 7) >> 3
    out = np.zeros(nbytes + 8, dtype=np.uint8)  # a lane flushes 4 whole bytes at a time
    if _huffman_pack(flat, len_tab, code_tab, lanes, starts, out) != OK:
        raise ValueError("huffman: a symbol has no code in the table (code length 0 or outside the alphabet)")
    return out[:nbytes].tobytes()


@_jit
def _huffman_decode(words, lut, lut_bits, first, count, offset, sorted_syms, max_len, pos, ends, n, lanes, out):  # pragma: no cover - compiled
    # ``words`` holds the payload as big-endian 32-bit words plus two zero
    # words; every lane position p satisfies p <= ends[j] <= total bits (the
    # caller checked), so words[p >> 5] and words[(p >> 5) + 1] are in range.
    # lut[top lut_bits bits] = sym << 5 | len for codes of <= lut_bits bits,
    # 0 for a prefix of a longer code (or of no code); longer codes are found
    # canonically: those of length l are first[l] .. first[l] + count[l] - 1.
    drop = np.uint64(64 - lut_bits)
    nw = words.size
    j = 0
    for i in range(n):
        p = pos[j]
        wi = p >> 5
        if wi + 1 >= nw:
            return ERR_OVERRUN
        win = ((np.uint64(words[wi]) << np.uint64(32)) | np.uint64(words[wi + 1])) << np.uint64(p & 31)
        e = lut[win >> drop]
        if e != 0:
            sym = e >> 5
            ln = e & 31
        else:
            sym = -1
            ln = 0
            for l in range(lut_bits + 1, max_len + 1):
                c = np.int64(win >> np.uint64(64 - l)) - first[l]
                if c >= 0 and c < count[l]:
                    sym = sorted_syms[offset[l] + c]
                    ln = l
                    break
            if sym < 0:
                return ERR_INVALID
        p += ln
        if p > ends[j]:
            return ERR_OVERRUN
        pos[j] = p
        out[i] = sym
        j += 1
        if j == lanes:
            j = 0
    for j in range(lanes):
        if pos[j] != ends[j]:
            return ERR_END
    return OK


def huffman_decode(raw: bytes, lengths: np.ndarray, max_len: int, lane_bits_: np.ndarray, n: int, lanes: int) -> tuple[int, np.ndarray]:
    """Decode ``n`` symbols from validated code lengths and lane bit counts: (error code, int64 symbols).

    The caller has checked the Kraft inequality, ``1 <= max_len <= 20``, the
    lane count, and that ``raw`` holds ``sum(lane_bits_)`` bits.

    Example:
        >>> lens = np.array([1, 2, 2])
        >>> err, out = huffman_decode(bytes([0x98]), lens, 2, np.array([5]), 3, 1)
        >>> err, out.tolist()
        (0, [1, 0, 2])
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    present = np.flatnonzero(lengths)
    order = present[np.lexsort((present, lengths[present]))]  # canonical order: by length, then symbol
    olen = lengths[order]
    count = np.bincount(olen, minlength=max_len + 1).astype(np.int64)
    offset = np.cumsum(count) - count
    first = np.zeros(max_len + 1, dtype=np.int64)
    code = 0
    for l in range(1, max_len + 1):  # RFC 1951's canonical first code of each length
        code = (code + int(count[l - 1])) << 1
        first[l] = code
    lut_bits = min(max_len, 11)
    short = olen <= lut_bits
    span = np.left_shift(1, lut_bits - olen[short])
    lut = np.zeros(1 << lut_bits, dtype=np.int64)
    filled = int(span.sum())
    lut[:filled] = np.repeat((order[short] << 5) | olen[short], span)
    nwords = (len(raw) + 3) >> 2
    words = np.zeros(nwords + 2, dtype=np.uint32)
    words[:nwords] = np.frombuffer(raw + bytes(nwords * 4 - len(raw)), dtype=">u4")
    ends = np.cumsum(lane_bits_).astype(np.int64)
    pos = ends - lane_bits_
    out = np.empty(n, dtype=np.int64)
    err = _huffman_decode(words, lut, lut_bits, first, count, offset, order.astype(np.int64), max_len, pos, ends, n, lanes, out)
    return err, out


# ---------------------------------------------------------------- rANS


@_jit
def _rans_encode(flat, f_tab, c_tab, lanes, x, out):  # pragma: no cover - compiled
    # Backwards over the stream (rANS is LIFO), highest lane first, writing
    # words from the end of ``out``: the result reads step by step, lane by
    # lane, exactly as the decoder consumes it. Returns the first used index.
    n = flat.size
    alphabet = f_tab.size
    w = out.size
    steps = (n + lanes - 1) // lanes
    for t in range(steps - 1, -1, -1):
        base = t * lanes
        k = min(lanes, n - base)
        for j in range(k - 1, -1, -1):
            s = flat[base + j]
            if s < 0 or s >= alphabet or f_tab[s] == 0:
                return -1
            f = np.uint32(f_tab[s])
            xs = np.uint32(x[j])
            if xs >= (f << np.uint32(16)):
                w -= 1
                out[w] = np.uint16(xs & np.uint32(0xFFFF))
                xs >>= np.uint32(16)
            q = xs // f
            xs = (q << np.uint32(16)) + (xs - q * f) + np.uint32(c_tab[s])
            x[j] = xs
    return w


def rans_encode(flat: np.ndarray, freq: np.ndarray, lanes: int, low: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode int64 symbols with quantised frequencies (sum 2**16): (final lane states uint32, words uint16).

    Example:
        >>> x, w = rans_encode(np.array([0, 1, 0], dtype=np.int64), np.array([49152, 16384]), 1, 1 << 16)
        >>> int(x[0]) > 0, w.size
        (True, 0)
    """
    f_tab = np.asarray(freq, dtype=np.int64)
    c_tab = np.cumsum(f_tab) - f_tab
    x = np.full(lanes, low, dtype=np.uint32)
    out = np.empty(flat.size, dtype=np.uint16)  # PREC = 16: at most one word per symbol
    w = _rans_encode(flat, f_tab, c_tab, lanes, x, out)
    if w < 0:
        raise ValueError("rANS: a symbol has frequency 0 or lies outside the table")
    return x, out[w:]


@_jit
def _rans_decode(x, words, slot_sym, f_tab, c_tab, n, lanes, low, out):  # pragma: no cover - compiled
    # slot_sym has 2**16 entries (slot < 2**16 by the mask) and names symbols
    # with f_tab[s] >= 1; a state stays in [1, 2**32) (see ans.py), words are
    # read only after checking ptr < words.size.
    nwords = words.size
    ptr = 0
    j = 0
    for i in range(n):
        xs = np.uint32(x[j])
        slot = xs & np.uint32(0xFFFF)
        s = slot_sym[slot]
        out[i] = s
        xs = np.uint32(f_tab[s]) * (xs >> np.uint32(16)) + slot - np.uint32(c_tab[s])
        if xs < np.uint32(low):
            if ptr >= nwords:
                return ERR_OVERRUN
            xs = (xs << np.uint32(16)) | np.uint32(words[ptr])
            ptr += 1
        x[j] = xs
        j += 1
        if j == lanes:
            j = 0
    if ptr != nwords:
        return ERR_END
    for j in range(lanes):
        if x[j] != low:
            return ERR_END
    return OK


def rans_decode(x: np.ndarray, words: np.ndarray, freq: np.ndarray, n: int, lanes: int, low: int) -> tuple[int, np.ndarray]:
    """Decode ``n`` symbols from validated lane states and a validated table: (error code, int64 symbols).

    The caller has checked that ``freq`` sums to 2**16, the lane count, and
    that every state lies in ``[low, 2**32)``.

    Example:
        >>> f = np.array([49152, 16384])
        >>> x, w = rans_encode(np.array([0, 1, 0], dtype=np.int64), f, 1, 1 << 16)
        >>> err, out = rans_decode(x, w, f, 3, 1, 1 << 16)
        >>> err, out.tolist()
        (0, [0, 1, 0])
    """
    f_tab = np.asarray(freq, dtype=np.int64)
    c_tab = np.cumsum(f_tab) - f_tab
    slot_sym = np.repeat(np.arange(f_tab.size, dtype=np.int32), f_tab)
    out = np.empty(n, dtype=np.int64)
    xs = np.asarray(x).astype(np.uint32)
    err = _rans_decode(xs, np.ascontiguousarray(words, dtype=np.uint16), slot_sym, f_tab, c_tab, n, lanes, low, out)
    return err, out
