"""Tensor dtypes a .dsz file stores, and their raw bit patterns as unsigned numpy arrays.

Codecs work on bit patterns (``uint8/16/32/64``), never on float values, so
-0.0, NaN payloads and infinities survive exactly; "zero" means the all-zero
bit pattern (so -0.0 counts as a nonzero and is kept).

Example:
    >>> import torch
    >>> name, bits = to_bits(torch.tensor([-0.0, 1.0]))
    >>> name, bits.tolist()
    ('float32', [2147483648, 1065353216])
    >>> torch.equal(from_bits(bits, name, (2,)), torch.tensor([-0.0, 1.0]))
    True
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import FormatError

# file dtype name -> (torch dtype, unsigned numpy dtype of the same width)
DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float32": (torch.float32, np.dtype("uint32")),
    "float16": (torch.float16, np.dtype("uint16")),
    "bfloat16": (torch.bfloat16, np.dtype("uint16")),
    "float64": (torch.float64, np.dtype("uint64")),
    "int8": (torch.int8, np.dtype("uint8")),
    "uint8": (torch.uint8, np.dtype("uint8")),
    "int16": (torch.int16, np.dtype("uint16")),
    "int32": (torch.int32, np.dtype("uint32")),
    "int64": (torch.int64, np.dtype("uint64")),
    "bool": (torch.bool, np.dtype("uint8")),
}
_SIGNED_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_BY_TORCH = {v[0]: k for k, v in DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """The file name of a torch dtype; ValueError for unsupported ones.

    Example:
        >>> dtype_name(torch.bfloat16)
        'bfloat16'
    """
    if dtype not in _BY_TORCH:
        raise ValueError(f"cannot store tensors of dtype {dtype}; supported: {', '.join(DTYPES)}")
    return _BY_TORCH[dtype]


def bits_dtype(name: str) -> np.dtype:
    """The unsigned numpy dtype holding a file dtype's bit patterns; FormatError if unknown.

    Example:
        >>> bits_dtype("float16")
        dtype('uint16')
    """
    if not isinstance(name, str) or name not in DTYPES:
        raise FormatError(f"unknown tensor dtype {name!r}; known: {', '.join(DTYPES)}")
    return DTYPES[name][1]


def to_bits(t: torch.Tensor) -> tuple[str, np.ndarray]:
    """(dtype name, flat unsigned bit patterns) of a CPU or device tensor (copied to CPU)."""
    name = dtype_name(t.dtype)
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    width = DTYPES[name][1].itemsize
    if t.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    elif t.dtype != torch.uint8:
        flat = flat.view(_SIGNED_VIEW[width])
    return name, flat.numpy().view(DTYPES[name][1]).copy()


def from_bits(bits: np.ndarray, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The tensor whose bit patterns are ``bits`` (inverse of :func:`to_bits`)."""
    torch_dtype, ubits = DTYPES[name]
    arr = np.ascontiguousarray(bits, dtype=ubits)
    if torch_dtype == torch.uint8:
        t = torch.from_numpy(arr.copy())
    elif torch_dtype == torch.bool:
        if arr.size and int(arr.max()) > 1:
            raise FormatError("a bool tensor holds a byte other than 0 or 1")
        t = torch.from_numpy(arr.copy()).to(torch.bool)
    else:
        t = torch.from_numpy(arr.view(np.dtype(f"int{8 * ubits.itemsize}")).copy()).view(torch_dtype)
    return t.reshape(shape)
