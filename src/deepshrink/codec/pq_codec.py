"""The ``pq`` tensor codec: a codebook of ``d``-element sub-vectors plus one byte per sub-vector.

A product-quantized weight (:mod:`deepshrink.quantize.pq`) holds at most 256
distinct runs of ``d`` consecutive values (in row-major order). The writer finds
that structure in the bit patterns themselves, so it needs no hint from the
model and survives ``fold_pq``: it keeps the block length ``d`` that gives the
smallest result, stores each distinct sub-vector once (as float16 when every
float32 value is exactly a half, as the paper stores codebooks) and one 8-bit
code per sub-vector, byte-aligned, or entropy coded when that is smaller.
Decoding is ``codebook[codes]``: bit-exact.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> book = rng.standard_normal((16, 4)).astype(np.float16).astype(np.float32)
    >>> bits = book[rng.integers(0, 16, 2000)].reshape(-1).view(np.uint32)
    >>> enc = PQCodec().encode(bits)
    >>> enc.params["d"], enc.params["k"], enc.params["half"]
    (4, 16, 1)
    >>> bool((PQCodec().decode(enc.params, list(enc.blobs), np.dtype("uint32"), bits.size) == bits).all())
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import FormatError
from . import streams
from .tensor_codecs import Encoded, TensorCodec, param, raw_values, register_codec

MAX_K = 256  # one byte per code
MAX_D = 64
MIN_NUMEL = 1024  # below this a codebook cannot pay for itself
_PROBE_ROWS = 2048
_SAMPLE = 1 << 16


def _row_keys(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of bit patterns (collisions are caught by the exact check)."""
    h = np.full(rows.shape[0], 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows.shape[1]):
            h = (h ^ rows[:, j].astype(np.uint64)) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
    return h


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(distinct rows, index of each row) when there are at most MAX_K, else None; exact."""
    keys, first, inverse = np.unique(_row_keys(rows), return_index=True, return_inverse=True)
    if keys.size > MAX_K:
        return None
    book = rows[first]
    inverse = inverse.reshape(-1)
    if not np.array_equal(book[inverse], rows):  # a hash collision: fall back to an exact row unique
        book, inverse = np.unique(rows, axis=0, return_inverse=True)
        if book.shape[0] > MAX_K:
            return None
        inverse = inverse.reshape(-1)
    return book, inverse


def _as_half(book: np.ndarray) -> np.ndarray | None:
    """The float16 bit patterns of a float32 codebook when the conversion is exact both ways."""
    if book.dtype != np.uint32:
        return None
    half = book.view(np.float32).astype(np.float16)
    if not np.array_equal(half.astype(np.float32).view(np.uint32), book):
        return None
    return half.view(np.uint16)


def _estimate(numel: int, d: int, k: int, width: int) -> int:
    return numel // d + k * d * width


class PQCodec(TensorCodec):
    """Codebook of distinct ``d``-element runs (raw, float16 when exact) + one code per run.

    Params: ``d`` (block length), ``k`` (codebook rows), ``half`` (1: the
    codebook holds float16 patterns of float32 values), ``coded`` (1: the codes
    are an entropy-coded stream, 0: raw bytes).
    """

    name = "pq"
    blob_count = 2

    def _candidates(self, bits: np.ndarray) -> list[tuple[int, int]]:
        n = bits.size
        sample = bits[:: max(1, n // _SAMPLE)]
        if np.unique(sample).size > MAX_K * MAX_D:
            return []  # dense weights: too many distinct values for any codebook of this size
        found = []
        for d in range(2, MAX_D + 1):
            if n % d or n // d <= MAX_K:
                continue
            probe = bits[: min(n, _PROBE_ROWS * d)].reshape(-1, d)
            distinct = np.unique(_row_keys(probe)).size
            if distinct <= MAX_K:
                found.append((_estimate(n, d, distinct, bits.dtype.itemsize), d))
        return sorted(found)

    def encode(self, bits: np.ndarray) -> Encoded | None:
        if bits.size < MIN_NUMEL or bits.dtype.itemsize < 2:
            return None
        for _, d in self._candidates(bits):
            found = _distinct_rows(bits.reshape(-1, d))
            if found is None:
                continue
            book, codes = found
            half = _as_half(book)
            stored = half if half is not None else book
            book_bytes = stored.astype(stored.dtype.newbyteorder("<"), copy=False)
            raw = codes.astype(np.uint8).tobytes()
            coded = streams.encode(codes) if book.shape[0] > 1 else None
            use_coded = coded is not None and len(coded) < len(raw)
            params = {"d": d, "k": int(book.shape[0]), "half": int(half is not None), "coded": int(use_coded)}
            return Encoded(self.name, params, (book_bytes.tobytes(), coded if use_coded else raw))  # type: ignore[arg-type]
        return None

    def decode(self, params: dict[str, Any], blobs: list[bytes], dtype: np.dtype, numel: int) -> np.ndarray:
        d = param(params, "d", 1, MAX_D, self.name)
        k = param(params, "k", 1, MAX_K, self.name)
        half = param(params, "half", 0, 1, self.name)
        coded = param(params, "coded", 0, 1, self.name)
        if numel % d:
            raise FormatError(f"codec pq: block length d={d} does not divide the tensor's {numel} elements")
        if half and dtype.itemsize != 4:
            raise FormatError(f"codec pq: a float16 codebook needs a 4-byte tensor, this one has {dtype.itemsize}-byte values")
        n = numel // d
        book_dtype = np.dtype("uint16") if half else dtype
        book = raw_values(blobs[0], book_dtype, k * d, "pq codebook").reshape(k, d)
        if half:
            book = book.view(np.float16).astype(np.float32).view(np.uint32)
        if coded:
            codes = streams.decode(blobs[1], n, k)
        else:
            if len(blobs[1]) != n:
                raise FormatError(f"codec pq: the code blob has {len(blobs[1])} bytes, expected {n}")
            codes = np.frombuffer(blobs[1], dtype=np.uint8)
            if n and int(codes.max()) >= k:
                raise FormatError(f"codec pq: a code is {int(codes.max())}, the codebook has {k} rows")
        return book.astype(dtype, copy=False)[codes].reshape(-1)


register_codec(PQCodec(), auto=True)

__all__ = ["PQCodec"]
