"""Bounds-checked reading of little-endian binary data.

Every read checks that the bytes exist before anything is allocated, so a
truncated or hostile buffer raises :class:`~deepshrink.errors.FormatError`
instead of an ``IndexError``, a short read or a huge allocation.

Example:
    >>> r = Reader(b"\\x01\\x02\\x00\\x00\\x00", "demo")
    >>> r.u8(), r.u32()
    (1, 2)
    >>> r.done()
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import FormatError


class Reader:
    """A cursor over ``data`` whose every read is checked; ``what`` names the stream in errors.

    Example:
        >>> Reader(b"", "empty").u8()
        Traceback (most recent call last):
        ...
        deepshrink.errors.FormatError: empty: truncated: needs 1 more byte(s) at offset 0, has 0
    """

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self.data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self.pos = 0
        self.what = what

    def remaining(self) -> int:
        """Bytes left after the cursor."""
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes (checked before slicing)."""
        if n < 0 or n > self.remaining():
            raise FormatError(
                f"{self.what}: truncated: needs {n} more byte(s) at offset {self.pos}, has {self.remaining()}"
            )
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def u8(self) -> int:
        """One unsigned byte."""
        return self.take(1)[0]

    def u32(self) -> int:
        """A little-endian unsigned 32-bit integer."""
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        """A little-endian unsigned 64-bit integer."""
        return int(struct.unpack("<Q", self.take(8))[0])

    def array(self, dtype: str, count: int) -> np.ndarray:
        """``count`` little-endian items of ``dtype`` (size checked against the buffer first)."""
        item = np.dtype(dtype).itemsize
        raw = self.take(count * item)
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(np.dtype(dtype).newbyteorder("="))

    def zlib_block(self, max_out: int) -> bytes:
        """A u32 length then that many zlib (RFC 1950) bytes inflating to at most ``max_out`` bytes."""
        n = self.u32()
        return inflate(self.take(n), max_out, self.what)

    def done(self) -> None:
        """Raise unless every byte was consumed (trailing garbage is an error)."""
        if self.remaining():
            raise FormatError(f"{self.what}: {self.remaining()} unexpected trailing byte(s) at offset {self.pos}")


def inflate(raw: bytes, max_out: int, what: str) -> bytes:
    """Inflate a zlib stream, refusing to produce more than ``max_out`` bytes (zip-bomb guard).

    Example:
        >>> inflate(zlib.compress(b"abc"), 3, "demo")
        b'abc'
    """
    obj = zlib.decompressobj()
    try:
        out = obj.decompress(raw, max_out)
    except zlib.error as exc:
        raise FormatError(f"{what}: corrupt zlib block ({exc})") from None
    if obj.unconsumed_tail or not obj.eof or obj.unused_data:
        raise FormatError(f"{what}: zlib block is truncated, too large (>{max_out} bytes) or has trailing data")
    return out


def deflate(raw: bytes) -> bytes:
    """zlib-compress at level 9 (deterministic for a given zlib build and input).

    Example:
        >>> inflate(deflate(b"xyz"), 3, "demo")
        b'xyz'
    """
    return zlib.compress(raw, 9)
