"""The .dsz container: magic, version, a checksummed JSON header, then checksummed blobs.

Layout (all integers little-endian; docs/FORMAT.md is the full specification)::

    0   8 bytes  magic  89 44 53 5A 0D 0A 1A 0A  ("\\x89DSZ\\r\\n\\x1a\\n")
    8   u16      major version (1): a reader refuses other majors
    10  u16      minor version (0): additions a version-1 reader may ignore
    12  u32      Z = length of the compressed header
    16  u32      J = length of the header JSON once inflated (<= 16 MiB)
    20  u32      CRC-32 of the Z compressed header bytes
    24  Z bytes  zlib (RFC 1950) of the UTF-8 JSON header
    24+Z         payload: every blob, back to back, in table order; the file ends with the last blob

Parsing validates the whole table with checked arithmetic before any blob
is touched: blobs are contiguous, non-overlapping and cover the payload
exactly; declared tensor sizes are capped; every failure is FormatError.

Example:
    >>> from deepshrink.codec.tensor_codecs import encode_bits
    >>> import numpy as np
    >>> enc = encode_bits(np.arange(4, dtype=np.uint32))
    >>> buf = pack({"architecture": None, "surgery": [], "meta": {}}, [("w", "float32", (4,), enc)])
    >>> parse(buf).tensors[0].name
    'w'
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..fileio import atomic_write_bytes
from ..errors import FormatError, SpecError
from .dtypes import bits_dtype, from_bits
from .reader import deflate, inflate
from .tensor_codecs import Encoded, decode_bits

MAGIC = b"\x89DSZ\r\n\x1a\n"
MAJOR, MINOR = 1, 0
PREAMBLE = struct.Struct("<8sHHIII")
MAX_HEADER = 16 << 20
MAX_NDIM = 16
MAX_NUMEL = 1 << 40
MAX_NAME = 1024
# Default cap on the bytes all tensors of one file may decode to (raise it with max_bytes=).
DEFAULT_MAX_BYTES = 8 << 30


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the table: where its blobs lie and how to decode them."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec: str
    params: dict[str, Any]
    blobs: tuple[tuple[int, int, int], ...]  # (offset in payload, length, crc32)

    @property
    def numel(self) -> int:
        """Number of elements (shape product; () is one element)."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Bytes of this tensor's blobs in the file."""
        return sum(b[1] for b in self.blobs)


@dataclass(frozen=True)
class Header:
    """A parsed and validated .dsz header."""

    version: tuple[int, int]
    architecture: dict[str, Any] | None
    surgery: list[dict[str, Any]]
    meta: dict[str, Any]
    tensors: tuple[TensorEntry, ...]
    payload_offset: int
    file_bytes: int


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces, ASCII, no NaN): saving twice gives equal bytes.

    Example:
        >>> canonical_json({"b": 1, "a": [1.5]})
        b'{"a":[1.5],"b":1}'
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"header content must be JSON data (dicts, lists, str, int, finite float): {exc}") from None


def pack(fields: dict[str, Any], tensors: list[tuple[str, str, tuple[int, ...], Encoded]]) -> bytes:
    """Serialise ``fields`` (architecture, surgery, meta) and encoded tensors into .dsz bytes."""
    table, blobs, offset = [], [], 0
    for name, dtype, shape, enc in tensors:
        entries = []
        for blob in enc.blobs:
            entries.append([offset, len(blob), zlib.crc32(blob)])
            blobs.append(blob)
            offset += len(blob)
        table.append(
            {"name": name, "dtype": dtype, "shape": list(shape), "codec": enc.codec, "params": enc.params, "blobs": entries}
        )
    header = dict(fields, format="dsz", payload_bytes=offset, tensors=table)
    raw = canonical_json(header)
    if len(raw) > MAX_HEADER:
        raise ValueError(f"the header is {len(raw)} bytes, more than the {MAX_HEADER} a reader accepts: shorten meta")
    z = deflate(raw)
    pre = PREAMBLE.pack(MAGIC, MAJOR, MINOR, len(z), len(raw), zlib.crc32(z))
    return b"".join([pre, z, *blobs])


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and rename.

    An interrupted write never leaves a torn file under ``path``.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> write_atomic(p, b"abc"); open(p, "rb").read()
        b'abc'
    """
    atomic_write_bytes(path, data)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a .dsz file; SpecError naming the path when it does not exist.

    Example:
        >>> read_bytes("/no/such.dsz")
        Traceback (most recent call last):
        ...
        deepshrink.errors.SpecError: no such file: /no/such.dsz (check the path)
    """
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise SpecError(f"no such file: {path} (check the path)") from None
    except IsADirectoryError:
        raise SpecError(f"{path} is a folder, not a .dsz file") from None


def parse(buf: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Header:
    """Validate the preamble, header and blob table of .dsz bytes (blobs are not decoded yet)."""
    if len(buf) < PREAMBLE.size or buf[:4] != MAGIC[:4]:
        looks_pickled = buf[:1] == b"\x80" or buf[:2] == b"PK"
        hint = " (it looks like a pickle or torch checkpoint, which deepshrink never unpickles)" if looks_pickled else ""
        raise FormatError(f"not a .dsz file: missing magic bytes{hint}")
    magic, major, minor, zlen, jlen, crc = PREAMBLE.unpack_from(buf)
    if magic != MAGIC:
        raise FormatError("not a .dsz file: damaged magic bytes (was it transferred in text mode?)")
    if major != MAJOR:
        raise FormatError(f"unsupported .dsz major version {major} (this build reads version {MAJOR})")
    if zlen > MAX_HEADER or jlen > MAX_HEADER:
        raise FormatError(f"header sizes {zlen}/{jlen} exceed the {MAX_HEADER}-byte cap")
    payload_offset = PREAMBLE.size + zlen
    if payload_offset > len(buf):
        raise FormatError(f"truncated file: header needs {zlen} bytes, the file has {len(buf) - PREAMBLE.size}")
    z = buf[PREAMBLE.size : payload_offset]
    if zlib.crc32(z) != crc:
        raise FormatError("header checksum mismatch: the file is corrupt")
    raw = inflate(z, jlen, "header")
    if len(raw) != jlen:
        raise FormatError(f"header inflates to {len(raw)} bytes, the preamble says {jlen}")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise FormatError(f"header is not valid JSON: {exc}") from None
    return _validate(doc, (major, minor), payload_offset, len(buf), max_bytes)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a header")


def _validate(doc: Any, version: tuple[int, int], payload_offset: int, file_bytes: int, max_bytes: int) -> Header:
    if not isinstance(doc, dict):
        raise FormatError("header must be a JSON object")
    if doc.get("format") != "dsz":
        raise FormatError(f"header format is {doc.get('format')!r}, expected 'dsz'")
    arch = doc.get("architecture")
    if arch is not None and not (
        isinstance(arch, dict) and isinstance(arch.get("spec"), str) and isinstance(arch.get("kwargs", {}), dict)
    ):
        raise FormatError("header architecture must be null or {'spec': str, 'kwargs': object}")
    surgery, meta = doc.get("surgery", []), doc.get("meta", {})
    if not isinstance(surgery, list) or not isinstance(meta, dict):
        raise FormatError("header surgery must be a list and meta an object")
    payload = doc.get("payload_bytes")
    if type(payload) is not int or payload != file_bytes - payload_offset:
        raise FormatError(
            f"payload size mismatch: header says {payload}, the file holds {file_bytes - payload_offset} bytes after"
            " the header (truncated or padded file)"
        )
    table = doc.get("tensors")
    if not isinstance(table, list):
        raise FormatError("header tensors must be a list")
    tensors, names, offset, decoded = [], set(), 0, 0
    for i, t in enumerate(table):
        entry = _entry(t, i)
        if entry.name in names:
            raise FormatError(f"tensor {entry.name!r} appears twice")
        names.add(entry.name)
        for off, length, _ in entry.blobs:
            if off != offset:
                raise FormatError(
                    f"tensor {entry.name!r}: blob at offset {off}, expected {offset} (blobs must be contiguous, in order)"
                )
            offset += length
            if offset > payload:
                raise FormatError(f"tensor {entry.name!r}: blob ends at {offset}, past the {payload}-byte payload")
        decoded += entry.numel * bits_dtype(entry.dtype).itemsize
        if decoded > max_bytes:
            raise FormatError(f"tensors would decode to more than max_bytes={max_bytes} bytes; raise it if you trust the file")
        tensors.append(entry)
    if offset != payload:
        raise FormatError(f"blobs cover {offset} of the {payload} payload bytes (gap or trailing data)")
    return Header(version, arch, surgery, meta, tuple(tensors), payload_offset, file_bytes)


def _entry(t: Any, i: int) -> TensorEntry:
    if not isinstance(t, dict):
        raise FormatError(f"tensor entry {i} must be an object")
    name, dtype, shape, codec = t.get("name"), t.get("dtype"), t.get("shape"), t.get("codec")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise FormatError(f"tensor entry {i}: name must be a non-empty string of at most {MAX_NAME} characters")
    bits_dtype(dtype)
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise FormatError(f"tensor {name!r}: shape must be a list of at most {MAX_NDIM} dimensions")
    numel = 1
    for d in shape:
        if type(d) is not int or not 0 <= d <= MAX_NUMEL:
            raise FormatError(f"tensor {name!r}: dimension {d!r} must be an integer in [0, {MAX_NUMEL}]")
        numel *= d
        if numel > MAX_NUMEL:
            raise FormatError(f"tensor {name!r}: more than {MAX_NUMEL} elements")
    params = t.get("params")
    if not isinstance(codec, str) or not isinstance(params, dict):
        raise FormatError(f"tensor {name!r}: codec must be a string and params an object")
    blobs = t.get("blobs")
    if not isinstance(blobs, list) or len(blobs) > 16:
        raise FormatError(f"tensor {name!r}: blobs must be a list of at most 16 [offset, length, crc32]")
    checked = []
    for b in blobs:
        if not (isinstance(b, list) and len(b) == 3 and all(type(v) is int and v >= 0 for v in b) and b[2] < 1 << 32):
            raise FormatError(f"tensor {name!r}: blob entry {b!r} must be [offset, length, crc32] of non-negative ints")
        checked.append((b[0], b[1], b[2]))
    return TensorEntry(name, dtype, tuple(shape), codec, params, tuple(checked))


def decode_tensor(buf: bytes, header: Header, entry: TensorEntry) -> torch.Tensor:
    """Check the blob checksums of one tensor and decode it bit-exactly."""
    blobs = []
    for j, (off, length, crc) in enumerate(entry.blobs):
        start = header.payload_offset + off
        blob = buf[start : start + length]
        if zlib.crc32(blob) != crc:
            raise FormatError(f"tensor {entry.name!r}: blob {j} checksum mismatch (corrupt file)")
        blobs.append(blob)
    dtype = bits_dtype(entry.dtype)
    try:
        bits = decode_bits(entry.codec, entry.params, blobs, dtype, entry.numel)
    except FormatError as exc:
        raise FormatError(f"tensor {entry.name!r}: {exc}") from None
    except (ValueError, IndexError, OverflowError, MemoryError, zlib.error) as exc:
        # numpy's own errors on data that passed the checks above: still a malformed file
        raise FormatError(f"tensor {entry.name!r}: undecodable {entry.codec} data ({type(exc).__name__}: {exc})") from None
    return from_bits(bits, entry.dtype, entry.shape)


def decode_all(buf: bytes, header: Header) -> dict[str, torch.Tensor]:
    """Every tensor of a parsed file, in file order."""
    return {e.name: decode_tensor(buf, header, e) for e in header.tensors}
