"""Sparse positions as relative gaps with an escape symbol, ready for entropy coding.

A sparse tensor stores the flat positions of its nonzeros as gaps ``g`` (the
number of zeros skipped since the previous nonzero). Deep Compression stores
gaps in a fixed 8 or 5 bits and inserts a filler zero value when a gap
overflows. Here the gap stream is entropy coded, so an escape is cheaper than
a filler: with ``esc = 2**b - 1``, the symbol ``esc`` means "skip ``esc``
zeros and keep reading" and a symbol ``r < esc`` ends a gap, which is then
``(escapes seen) * esc + r``. No filler value is stored. The encoder tries
every ``b`` in 1..16 and keeps the one whose estimated coded size is smallest
(``b = 1`` is a run-length code of the occupancy bitmap).

Example:
    >>> esc, syms = encode_positions(np.array([0, 5, 6]))
    >>> decode_positions(syms, esc, nnz=3, numel=10).tolist()
    [0, 5, 6]
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError

MAX_BITS = 16


def _cost_bits(counts: np.ndarray) -> float:
    """Order-0 entropy of a histogram in bits, plus about 2 bytes of table per used symbol."""
    c = counts[counts > 0].astype(np.float64)
    total = c.sum()
    return float(np.sum(c * np.log2(total / c))) + 16.0 * c.size


def encode_positions(positions: np.ndarray) -> tuple[int, np.ndarray]:
    """Escape value and gap symbols for strictly increasing flat positions.

    Example:
        >>> encode_positions(np.array([3]))[1].tolist()
        [3]
    """
    pos = np.asarray(positions, dtype=np.int64)
    gaps = np.diff(pos, prepend=-1) - 1
    if gaps.size == 0:
        return 1, np.zeros(0, dtype=np.int64)
    best: tuple[float, int] | None = None
    for b in range(1, MAX_BITS + 1):
        esc = (1 << b) - 1
        q, r = np.divmod(gaps, esc)
        counts = np.bincount(r, minlength=esc + 1)
        counts[esc] += int(q.sum())
        cost = _cost_bits(counts)
        if best is None or cost < best[0]:
            best = (cost, esc)
        if esc > int(gaps.max()):
            break  # larger escapes change nothing any more
    assert best is not None
    esc = best[1]
    q, r = np.divmod(gaps, esc)
    ends = np.cumsum(q + 1) - 1  # where each gap's final symbol goes
    syms = np.full(int(ends[-1]) + 1, esc, dtype=np.int64)
    syms[ends] = r
    return esc, syms


def decode_positions(symbols: np.ndarray, esc: int, nnz: int, numel: int) -> np.ndarray:
    """Flat positions from gap symbols; FormatError unless they give ``nnz`` positions below ``numel``.

    Example:
        >>> decode_positions(np.array([1, 0]), 1, nnz=1, numel=2).tolist()
        [1]
    """
    syms = np.asarray(symbols, dtype=np.int64)
    if not 1 <= esc < (1 << MAX_BITS):
        raise FormatError(f"sparse positions: escape value {esc} outside [1, {(1 << MAX_BITS) - 1}]")
    finals = np.flatnonzero(syms != esc)
    if finals.size != nnz:
        raise FormatError(f"sparse positions: gap stream ends {finals.size} gaps, expected nnz={nnz}")
    if nnz == 0:
        if syms.size:
            raise FormatError("sparse positions: escapes without a final gap symbol")
        return np.zeros(0, dtype=np.int64)
    if finals[-1] != syms.size - 1:
        raise FormatError("sparse positions: the gap stream ends inside an escape run")
    escapes = syms.size - nnz
    if escapes * esc > numel:
        raise FormatError(f"sparse positions: escapes skip more than the tensor's {numel} elements")
    runs = np.diff(finals, prepend=-1) - 1
    gaps = runs * esc + syms[finals]
    pos = np.cumsum(gaps + 1) - 1
    if int(pos[-1]) >= numel:
        raise FormatError(f"sparse positions: position {int(pos[-1])} is outside the tensor's {numel} elements")
    return pos
