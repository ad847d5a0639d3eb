"""Shared helpers of the entropy coders: symbol dtypes and interleaved lanes.

Both coders split a stream of ``n`` symbols into ``K`` interleaved lanes
(symbol ``i`` belongs to lane ``i % K``). Every lane is an independent code,
so numpy can encode and decode one symbol of every lane per vectorised step:
the Python loop runs ``ceil(n / K)`` times, never once per symbol. A lane
costs a few bytes of side information, so ``K`` grows with the stream.

Example:
    >>> lanes_for(10)
    1
    >>> lanes_for(10_000_000) > 1
    True
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError

# Symbol dtypes a stream may carry, by code byte (the decoder returns the encoder's dtype).
DTYPES: tuple[str, ...] = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")

MAX_LANES = 4096
# A stream takes at most this many vectorised steps (so decoding time is bounded
# whatever a hostile file declares); longer streams use more lanes, and a stream
# may hold at most MAX_LANES * MAX_STEPS symbols.
MAX_STEPS = 1 << 15
MAX_SYMBOLS = MAX_LANES * MAX_STEPS
# About this many symbols per lane before another lane is added: the lane side
# information (4 bytes) then costs at most ~0.01 bit per symbol.
SYMBOLS_PER_LANE = 2048


# ... and at least this many output bytes per lane, so that the lane side
# information (about 2 bytes of waste each) stays below 0.5% of the stream.
BYTES_PER_LANE = 400


def lanes_for(n: int, est_bytes: float | None = None) -> int:
    """How many lanes a stream of ``n`` symbols (about ``est_bytes`` coded) uses.

    Example:
        >>> lanes_for(0), lanes_for(5000), lanes_for(10**8)
        (1, 2, 4096)
        >>> lanes_for(10**6, est_bytes=40_000)
        100
    """
    if n > MAX_SYMBOLS:
        raise ValueError(f"a stream holds at most {MAX_SYMBOLS} symbols; got {n}: split the tensor")
    k = n // SYMBOLS_PER_LANE
    if est_bytes is not None:
        k = min(k, int(est_bytes // BYTES_PER_LANE))
    return int(min(MAX_LANES, max(1, k, -(-n // MAX_STEPS))))


def check_lanes(lanes: int, n: int, what: str) -> int:
    """Validate a declared lane count for ``n`` symbols; returns the number of steps.

    Example:
        >>> check_lanes(2, 5, "demo")
        3
    """
    if not 1 <= lanes <= min(n, MAX_LANES):
        raise FormatError(f"{what}: lane count {lanes} outside [1, min(count={n}, {MAX_LANES})]")
    steps = -(-n // lanes)
    if steps > MAX_STEPS:
        raise FormatError(f"{what}: {n} symbols in {lanes} lanes exceed {MAX_STEPS} steps per lane")
    return steps


def dtype_code(arr: np.ndarray) -> int:
    """The code byte of an integer array's dtype; ValueError for anything else.

    Example:
        >>> dtype_code(np.zeros(2, dtype=np.int32))
        6
    """
    name = np.dtype(arr.dtype).name
    if name not in DTYPES:
        raise ValueError(f"symbols must be an integer array ({', '.join(DTYPES)}); got dtype {name}")
    return DTYPES.index(name)


def dtype_from_code(code: int, what: str) -> np.dtype:
    """The dtype a code byte names; FormatError for an unknown code.

    Example:
        >>> dtype_from_code(1, "demo")
        dtype('uint16')
    """
    if code >= len(DTYPES):
        raise FormatError(f"{what}: unknown symbol dtype code {code}")
    return np.dtype(DTYPES[code])


def check_symbols(symbols: np.ndarray, limit: int) -> np.ndarray:
    """Flatten ``symbols`` and check they are integers in ``[0, limit)``; returns int64.

    Example:
        >>> check_symbols(np.array([[1, 2]], dtype=np.uint8), 4)
        array([1, 2])
    """
    arr = np.asarray(symbols)
    dtype_code(arr)
    flat = arr.reshape(-1)
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= limit):
        raise ValueError(
            f"symbols must lie in [0, {limit}); got range [{int(flat.min())}, {int(flat.max())}]:"
            " remap large or negative values to a dense alphabet first"
        )
    return flat.astype(np.int64, copy=False)


def lane_major(symbols: np.ndarray, lanes: int, fill: int = 0) -> np.ndarray:
    """Pad to a multiple of ``lanes`` with ``fill`` and reorder lane by lane (lane 0's symbols first).

    Example:
        >>> lane_major(np.arange(5), 2, fill=-1)
        array([ 0,  2,  4,  1,  3, -1])
    """
    steps = -(-symbols.size // lanes)
    padded = np.full(steps * lanes, fill, dtype=symbols.dtype)
    padded[: symbols.size] = symbols
    return padded.reshape(steps, lanes).T.reshape(-1)
