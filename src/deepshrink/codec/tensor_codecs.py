"""Tensor codecs: bit patterns of one tensor <-> a few blobs plus small integer params.

Built in (all bit-exact, chosen automatically by the smallest result):

- ``dense``: the raw little-endian bit patterns.
- ``dense_planes``: the same values split into byte planes, each entropy coded
  (the sign/exponent byte of trained float weights takes ~3 bits, not 8).
- ``sparse``: nonzero positions as escaped gaps (entropy coded, see
  :mod:`.gaps`) plus the raw nonzero values.
- ``shared``: a codebook of the distinct bit patterns plus one entropy-coded
  index per element (weight sharing; int8 tensors also land here).
- ``sparse_shared``: gaps plus codebook indices of the nonzeros (pruning and
  sharing together, as in Deep Compression).

Later representations (integer, binary, product-quantized codes) register a
:class:`TensorCodec` with :func:`register_codec`; a module type can force one
for its tensors with :func:`register_module_hook`. The container never needs
to change: it stores the codec name, its params and its blobs.

Example:
    >>> import numpy as np
    >>> bits = np.array([0, 0, 7, 0, 7, 0], dtype=np.uint32)
    >>> enc = encode_bits(bits)
    >>> enc.codec
    'dense'
    >>> bool((decode_bits(enc.codec, enc.params, list(enc.blobs), np.dtype("uint32"), 6) == bits).all())
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..errors import FormatError
from . import streams
from .gaps import decode_positions, encode_positions

MAX_CODEBOOK = 1 << 16
_SAMPLE = 1 << 17  # distinct-value probe size before a full np.unique
_CHUNK = 1 << 20  # values per step of the exact distinct-value count


@dataclass(frozen=True)
class Encoded:
    """One encoded tensor: codec name, JSON-safe integer params, and blobs (in order).

    Example:
        >>> Encoded("dense", {}, (b"abcd",)).nbytes
        4
    """

    codec: str
    params: dict[str, int] = field(default_factory=dict)
    blobs: tuple[bytes, ...] = ()

    @property
    def nbytes(self) -> int:
        """Bytes of all blobs (what the tensor costs in the payload)."""
        return sum(len(b) for b in self.blobs)


class TensorCodec(ABC):
    """A way to turn a flat array of bit patterns into blobs and back.

    ``encode`` returns None when the codec does not apply to these values.
    ``decode`` must validate every param and blob and raise FormatError.

    Example:
        >>> CODECS["dense"].name
        'dense'
    """

    name: str = ""
    blob_count: int = 1

    def expected_blobs(self, dtype: np.dtype) -> int:
        """How many blobs a tensor of ``dtype`` has under this codec (checked before decoding)."""
        return self.blob_count

    @abstractmethod
    def encode(self, bits: np.ndarray) -> Encoded | None:
        """Encode flat unsigned bit patterns, or None when not applicable."""

    @abstractmethod
    def decode(self, params: dict[str, Any], blobs: list[bytes], dtype: np.dtype, numel: int) -> np.ndarray:
        """Decode to exactly ``numel`` flat bit patterns of ``dtype``."""


CODECS: dict[str, TensorCodec] = {}
AUTO: list[str] = []
ModuleHook = Callable[[nn.Module, str], "str | None"]
MODULE_HOOKS: dict[type, ModuleHook] = {}


def register_codec(codec: TensorCodec, *, auto: bool = False) -> TensorCodec:
    """Register a codec under ``codec.name``; ``auto`` makes :func:`encode_bits` try it on every tensor.

    Example:
        >>> class Raw(DenseCodec):
        ...     name = "doc_raw"
        >>> register_codec(Raw()).name
        'doc_raw'
    """
    if not codec.name:
        raise ValueError("a codec needs a non-empty name")
    CODECS[codec.name] = codec
    if auto and codec.name not in AUTO:
        AUTO.append(codec.name)
    return codec


def register_module_hook(module_type: type) -> Callable[[ModuleHook], ModuleHook]:
    """Let a module type choose the codec of its own tensors (``hook(module, tensor_name) -> codec name | None``).

    Example:
        >>> @register_module_hook(nn.Embedding)
        ... def _dense_embeddings(module, name):
        ...     return "dense"
        >>> del MODULE_HOOKS[nn.Embedding]
    """

    def decorate(hook: ModuleHook) -> ModuleHook:
        MODULE_HOOKS[module_type] = hook
        return hook

    return decorate


def forced_codec(module: nn.Module, tensor_name: str) -> str | None:
    """The codec a registered hook asks for (nearest class in the MRO), or None.

    Example:
        >>> forced_codec(nn.Linear(1, 1), "weight") is None
        True
    """
    for cls in type(module).__mro__:
        hook = MODULE_HOOKS.get(cls)
        if hook is not None:
            return hook(module, tensor_name)
    return None


def encode_bits(bits: np.ndarray, codec: str | None = None) -> Encoded:
    """Encode flat bit patterns with ``codec``, or with the smallest of the automatic codecs.

    Example:
        >>> encode_bits(np.zeros(1000, dtype=np.uint16)).codec
        'sparse'
    """
    flat = np.ascontiguousarray(bits).reshape(-1)
    if codec is not None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; registered: {', '.join(sorted(CODECS))}")
        enc = CODECS[codec].encode(flat)
        if enc is None:
            raise ValueError(f"codec {codec!r} cannot encode this tensor")
        return enc
    best: Encoded | None = None
    for name in AUTO:
        try:
            enc = CODECS[name].encode(flat)
        except ValueError:  # e.g. a stream longer than one entropy-coded stream may hold
            continue
        if enc is not None and (best is None or enc.nbytes < best.nbytes):
            best = enc
    assert best is not None  # dense always applies
    return best


def decode_bits(codec: str, params: dict[str, Any], blobs: list[bytes], dtype: np.dtype, numel: int) -> np.ndarray:
    """Decode one tensor's bit patterns; FormatError for an unknown codec or bad data.

    Example:
        >>> decode_bits("nope", {}, [], np.dtype("uint8"), 0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        deepshrink.errors.FormatError: unknown codec 'nope'; this build knows: dense, dense_planes, ...
    """
    impl = CODECS.get(codec) if isinstance(codec, str) else None
    if impl is None:
        known = ", ".join(sorted(n for n in CODECS if not n.startswith("doc_")))
        raise FormatError(f"unknown codec {codec!r}; this build knows: {known}")
    if not isinstance(params, dict):
        raise FormatError(f"codec {codec}: params must be an object")
    expected = impl.expected_blobs(dtype)
    if len(blobs) != expected:
        raise FormatError(f"codec {codec}: needs {expected} blob(s), the file lists {len(blobs)}")
    out = impl.decode(params, blobs, dtype, numel)
    if out.shape != (numel,) or out.dtype != dtype:
        raise FormatError(f"codec {codec}: decoded {out.shape} {out.dtype}, expected ({numel},) {dtype}")
    return out


def param(params: dict[str, Any], key: str, lo: int, hi: int, codec: str) -> int:
    """An integer param in ``[lo, hi]`` or FormatError naming it.

    Example:
        >>> param({"k": 3}, "k", 1, 4, "shared")
        3
    """
    value = params.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise FormatError(f"codec {codec}: param {key}={value!r} must be an integer in [{lo}, {hi}]")
    return value


def raw_values(blob: bytes, dtype: np.dtype, count: int, what: str) -> np.ndarray:
    """``count`` little-endian bit patterns from a blob whose length must match exactly.

    Example:
        >>> raw_values(b"\\x01\\x00", np.dtype("uint16"), 1, "demo").tolist()
        [1]
    """
    if len(blob) != count * dtype.itemsize:
        raise FormatError(f"{what}: blob has {len(blob)} bytes, expected {count} x {dtype.itemsize}")
    return np.frombuffer(blob, dtype=dtype.newbyteorder("<")).astype(dtype)


def _le(values: np.ndarray) -> bytes:
    return values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()


def _codebook(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(sorted distinct values, index of each value) when there are at most MAX_CODEBOOK distinct values.

    Example:
        >>> book, idx = _codebook(np.array([7, 3, 7, 7], dtype=np.uint32))
        >>> book.tolist(), idx.tolist()
        ([3, 7], [1, 0, 1, 1])
        >>> _codebook(np.arange(MAX_CODEBOOK + 1, dtype=np.uint32)) is None
        True
    """
    if values.size > _SAMPLE and np.unique(values[:: values.size // _SAMPLE]).size > MAX_CODEBOOK:
        return None  # cheap early exit for dense float weights
    # Distinct values chunk by chunk, stopping as soon as there are too many: a sparse float tensor's
    # sample can hold fewer than MAX_CODEBOOK distinct values while the whole tensor holds millions, and
    # one np.unique over 100M values took 50 s and several GB (a 70%-sparse VGG's first classifier layer).
    book = np.empty(0, dtype=values.dtype)
    for start in range(0, values.size, _CHUNK):
        book = np.union1d(book, values[start : start + _CHUNK])
        if book.size > MAX_CODEBOOK:
            return None
    return book, np.searchsorted(book, values.reshape(-1))


class DenseCodec(TensorCodec):
    """Raw little-endian bit patterns."""

    name = "dense"

    def encode(self, bits: np.ndarray) -> Encoded:
        return Encoded(self.name, {}, (_le(bits),))

    def decode(self, params: dict[str, Any], blobs: list[bytes], dtype: np.dtype, numel: int) -> np.ndarray:
        return raw_values(blobs[0], dtype, numel, "dense")


class BytePlaneCodec(TensorCodec):
    """Dense values split into byte planes, each plane entropy coded (sign/exponent bytes compress well).

    Plane ``i`` holds byte ``i`` (little-endian) of every value; ``w`` planes, ``w`` blobs.
    """

    name = "dense_planes"

    def expected_blobs(self, dtype: np.dtype) -> int:
        return dtype.itemsize

    def encode(self, bits: np.ndarray) -> Encoded | None:
        if bits.size < 64 or bits.dtype.itemsize == 1:
            return None  # too small to pay for the tables; 1-byte values: ``shared`` covers them
        planes = np.ascontiguousarray(bits.astype(bits.dtype.newbyteorder("<"), copy=False)).view(np.uint8)
        planes = planes.reshape(bits.size, bits.dtype.itemsize)
        return Encoded(self.name, {}, tuple(streams.encode(planes[:, i]) for i in range(planes.shape[1])))

    def decode(self, params: dict[str, Any], blobs: list[bytes], dtype: np.dtype, numel: int) -> np.ndarray:
        planes = np.empty((numel, dtype.itemsize), dtype=np.uint8)
        for i, blob in enumerate(blobs):
            planes[:, i] = streams.decode(blob, numel, 256)
        return planes.reshape(-1).view(dtype.newbyteorder("<")).astype(dtype)


class SparseCodec(TensorCodec):
    """Escaped gaps of the nonzero positions (entropy coded) plus the raw nonzero values."""

    name = "sparse"
    blob_count = 2

    def encode(self, bits: np.ndarray) -> Encoded:
        pos = np.flatnonzero(bits)
        esc, syms = encode_positions(pos)
        params = {"nnz": int(pos.size), "esc": esc, "nsym": int(syms.size)}
        return Encoded(self.name, params, (streams.encode(syms), _le(bits[pos])))

    def decode(self, params: dict[str, Any], blobs: list[bytes], dtype: np.dtype, numel: int) -> np.ndarray:
        pos = _positions(params, blobs[0], numel, self.name)
        out = np.zeros(numel, dtype=dtype)
        out[pos] = raw_values(blobs[1], dtype, pos.size, "sparse values")
        return out


class SharedCodec(TensorCodec):
    """A codebook of distinct bit patterns plus one entropy-coded index per element."""

    name = "shared"
    blob_count = 2

    def encode(self, bits: np.ndarray) -> Encoded | None:
        cb = _codebook(bits)
        if cb is None or bits.size == 0:
            return None
        book, idx = cb
        return Encoded(self.name, {"k": int(book.size)}, (_le(book), streams.encode(idx)))

    def decode(self, params: dict[str, Any], blobs: list[bytes], dtype: np.dtype, numel: int) -> np.ndarray:
        k = param(params, "k", 1, MAX_CODEBOOK, self.name)
        book = raw_values(blobs[0], dtype, k, "shared codebook")
        return book[streams.decode(blobs[1], numel, k)]


class SparseSharedCodec(TensorCodec):
    """Escaped gaps of the nonzero positions plus codebook indices of the nonzero values."""

    name = "sparse_shared"
    blob_count = 3

    def encode(self, bits: np.ndarray) -> Encoded | None:
        pos = np.flatnonzero(bits)
        cb = _codebook(bits[pos]) if pos.size else None
        if cb is None:
            return None
        book, idx = cb
        esc, syms = encode_positions(pos)
        params = {"nnz": int(pos.size), "esc": esc, "nsym": int(syms.size), "k": int(book.size)}
        return Encoded(self.name, params, (streams.encode(syms), _le(book), streams.encode(idx)))

    def decode(self, params: dict[str, Any], blobs: list[bytes], dtype: np.dtype, numel: int) -> np.ndarray:
        pos = _positions(params, blobs[0], numel, self.name)
        k = param(params, "k", 1, MAX_CODEBOOK, self.name)
        book = raw_values(blobs[1], dtype, k, "sparse_shared codebook")
        out = np.zeros(numel, dtype=dtype)
        out[pos] = book[streams.decode(blobs[2], pos.size, k)]
        return out


def _positions(params: dict[str, Any], blob: bytes, numel: int, codec: str) -> np.ndarray:
    nnz = param(params, "nnz", 0, numel, codec)
    esc = param(params, "esc", 1, (1 << 16) - 1, codec)
    nsym = param(params, "nsym", nnz, nnz + numel, codec)
    syms = streams.decode(blob, nsym, esc + 1)
    return decode_positions(syms, esc, nnz, numel)


for _codec in (DenseCodec(), BytePlaneCodec(), SparseCodec(), SharedCodec(), SparseSharedCodec()):
    register_codec(_codec, auto=True)
