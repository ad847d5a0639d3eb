"""The ``packed`` tensor codec: small integer codes at a fixed number of bits each.

Low-bit weights (4-bit QAT codes, binary signs, 2-bit codes) are stored as
``(value - lo)`` in ``bits`` bits per element, least significant bit first
across the blob (docs/FORMAT.md, section 4). The codec applies to 1-byte
dtypes (``int8``, ``uint8``, ``bool``) whose values span at most ``2**bits``
consecutive integers. Layers choose it through :func:`register_module_hook`
(:mod:`deepshrink.quantize`); it is not tried automatically, since the
entropy-coded ``shared`` codec is usually a little smaller but slower to decode.

Example:
    >>> import numpy as np
    >>> bits = np.array([0xF8, 0x07, 0x00, 0xFF], dtype=np.uint8)  # int8 -8, 7, 0, -1
    >>> enc = PackedCodec().encode(bits)
    >>> enc.params, len(enc.blobs[0])
    ({'bits': 4, 'lo': -8}, 2)
    >>> PackedCodec().decode(enc.params, list(enc.blobs), np.dtype("uint8"), 4).tolist()
    [248, 7, 0, 255]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import FormatError
from .tensor_codecs import Encoded, TensorCodec, param, register_codec

MAX_BITS = 8


def pack_codes(values: np.ndarray, bits: int) -> bytes:
    """Non-negative integers below ``2**bits`` packed LSB first, ``bits`` each.

    Example:
        >>> pack_codes(np.array([1, 2, 3]), 2).hex()
        '39'
    """
    v = np.ascontiguousarray(values, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return v.tobytes()
    planes = np.unpackbits(v[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_codes(blob: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes as uint8 (the blob length must match exactly).

    Example:
        >>> unpack_codes(bytes.fromhex("39"), 2, 3).tolist()
        [1, 2, 3]
    """
    need = (count * bits + 7) // 8
    if len(blob) != need:
        raise FormatError(f"codec packed: blob has {len(blob)} bytes, {count} codes of {bits} bits need {need}")
    raw = np.frombuffer(blob, dtype=np.uint8)
    if bits == 8:
        return raw.copy()
    stream = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits)
    return np.packbits(stream, axis=1, bitorder="little").reshape(-1)


class PackedCodec(TensorCodec):
    """``(value - lo)`` of 1-byte values, ``bits`` bits each, LSB first; params ``bits`` and ``lo``."""

    name = "packed"

    def encode(self, bits: np.ndarray) -> Encoded | None:
        if bits.dtype.itemsize != 1:
            return None
        signed = bits.view(np.int8).astype(np.int16)
        if bits.size == 0:
            return Encoded(self.name, {"bits": 1, "lo": 0}, (b"",))
        # The signed reading suits int8 codes; the unsigned one suits uint8 and bool.
        best = None
        for values in (signed, bits.astype(np.int16)):
            lo, hi = int(values.min()), int(values.max())
            width = max(1, int(hi - lo).bit_length())
            if best is None or width < best[0]:
                best = (width, lo, values)
        width, lo, values = best  # type: ignore[misc]
        return Encoded(self.name, {"bits": width, "lo": lo}, (pack_codes((values - lo).astype(np.uint8), width),))

    def decode(self, params: dict[str, Any], blobs: list[bytes], dtype: np.dtype, numel: int) -> np.ndarray:
        if dtype.itemsize != 1:
            raise FormatError(f"codec packed: holds 1-byte dtypes only, not {dtype}")
        width = param(params, "bits", 1, MAX_BITS, self.name)
        lo = param(params, "lo", -128, 255, self.name)
        codes = unpack_codes(blobs[0], width, numel).astype(np.int16) + lo
        if codes.size and (int(codes.min()) < -128 or int(codes.max()) > 255):
            raise FormatError("codec packed: decoded values leave the byte range")
        return (codes & 0xFF).astype(np.uint8).view(dtype)


register_codec(PackedCodec())
