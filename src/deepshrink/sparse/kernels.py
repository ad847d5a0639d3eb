"""Compiled (numba) CPU kernels for sparse weights times dense activations.

Two layouts, each the fastest we measured for its case (benchmarks/bench_sparse_inference.py
has the comparison with torch's CSR ``torch.mm``/``torch.sparse.mm``/``addmm`` and dense):

- **SELL-16** (sliced ELLPACK, rows sorted by length) for Linear layers at small batch:
  16 rows advance together, so each step is one contiguous load of 16 values and 16
  column indices and a 16-lane gather from the input that LLVM turns into vector code;
  no per-row horizontal sum, and sorting the rows by length keeps padding under ~1%.
  Column indices are 16-bit when the input has at most 65,536 features (less memory
  traffic: at 95% sparsity a 4096x4096 layer moves 5 MB instead of 67 MB).
- **CSR row-axpy** for convolutions through im2col: each nonzero scales one contiguous
  row of the unfolded input, a long vectorised loop.

The kernels are single-threaded on purpose: at batch 1 the work is a few hundred
microseconds, less than waking a thread pool costs on a shared machine (torch's CSR
matmul with 2 threads was 10x slower than with 1 in our measurements).

Safety: the arrays are built by :func:`sell_from_dense` and :func:`csr_from_dense`
from a dense weight, never read from a file, so every index is in range by construction.

Example:
    >>> import numpy as np, torch
    >>> w = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    >>> s = sell_from_dense(w)
    >>> out = np.zeros((1, 2), dtype=np.float32)
    >>> sell_matmul(*s, np.array([[1.0, 10.0]], dtype=np.float32), out)
    >>> out.tolist()
    [[20.0, 3.0]]
"""

from __future__ import annotations

import numpy as np
import torch

try:  # numba compiles the kernels; without it the layers use torch's CSR matmul
    from numba import njit
except ImportError:  # pragma: no cover - only where numba is absent
    njit = None

C = 16  # rows per slice: one AVX-512 vector of float32 (two AVX2 vectors)


def available() -> bool:
    """Whether the compiled kernels can be used (numba imports).

    Example:
        >>> isinstance(available(), bool)
        True
    """
    return njit is not None


def _jit(fn):  # type: ignore[no-untyped-def]
    return njit(cache=True, nogil=True, fastmath=True)(fn) if njit is not None else fn


@_jit
def _sell_matmul(slice_ptr, cols, vals, rows, x, out):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    # One sample at a time: with 1-D rows and a 16-float accumulator the lane loop compiles to
    # vector loads and a gather (the weights stream from cache again for each further sample).
    acc = np.zeros(16, dtype=np.float32)
    for b in range(x.shape[0]):
        xb = x[b]
        ob = out[b]
        for s in range(slice_ptr.shape[0] - 1):
            for c in range(16):
                acc[c] = 0.0
            for off in range(slice_ptr[s], slice_ptr[s + 1], 16):
                for c in range(16):
                    acc[c] += vals[off + c] * xb[cols[off + c]]
            for c in range(16):
                r = rows[s * 16 + c]
                if r >= 0:
                    ob[r] = acc[c]


@_jit
def _csr_rows_matmul(indptr, cols, vals, x, out):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    # out[n, r, :] = sum_j vals[j] * x[n, cols[j], :] over the nonzeros j of row r
    for n in range(x.shape[0]):
        for r in range(indptr.shape[0] - 1):
            row = out[n, r]
            row[:] = 0.0
            for j in range(indptr[r], indptr[r + 1]):
                v = vals[j]
                src = x[n, cols[j]]
                for k in range(row.shape[0]):
                    row[k] += v * src[k]


def sell_from_dense(weight: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SELL-16 arrays ``(slice_ptr, cols, vals, rows)`` of a 2-D weight (zeros dropped).

    ``rows[s * 16 + c]`` is the output row of lane ``c`` of slice ``s`` (-1: padding).

    Example:
        >>> import torch
        >>> ptr, cols, vals, rows = sell_from_dense(torch.eye(3))
        >>> ptr.tolist(), int(vals.sum())
        ([0, 16], 3)
    """
    w = weight.detach().to(torch.float32).cpu().numpy()
    m, n = w.shape
    nz_rows, nz_cols = np.nonzero(w)
    counts = np.bincount(nz_rows, minlength=m)
    order = np.argsort(-counts, kind="stable")  # long rows first: slices of similar rows pad little
    slices = -(-m // C)
    rows = np.full(slices * C, -1, dtype=np.int64)
    rows[:m] = order
    widths = np.zeros(slices, dtype=np.int64)
    sorted_counts = counts[order]
    for s in range(slices):
        widths[s] = sorted_counts[s * C : (s + 1) * C].max(initial=0)
    slice_ptr = np.zeros(slices + 1, dtype=np.int64)
    slice_ptr[1:] = np.cumsum(widths * C)
    total = int(slice_ptr[-1])
    col_dtype = np.uint16 if n <= 65536 else np.int32
    cols = np.zeros(total, dtype=col_dtype)
    vals = np.zeros(total, dtype=np.float32)
    starts = np.zeros(m + 1, dtype=np.int64)
    starts[1:] = np.cumsum(counts)  # np.nonzero is row-major: row r's entries are contiguous
    lane_of_row = np.empty(m, dtype=np.int64)
    lane_of_row[order] = np.arange(m)
    for r in range(m):
        k = int(counts[r])
        if k == 0:
            continue
        lane = int(lane_of_row[r])
        s, c = divmod(lane, C)
        pos = slice_ptr[s] + c + C * np.arange(k)
        cols[pos] = nz_cols[starts[r] : starts[r + 1]]
        vals[pos] = w[r, nz_cols[starts[r] : starts[r + 1]]]
    return slice_ptr, cols, vals, rows


def csr_from_dense(weight2d: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays ``(indptr, cols, vals)`` of a 2-D weight (int64 pointers, int32 columns).

    Example:
        >>> import torch
        >>> [a.tolist() for a in csr_from_dense(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))]
        [[0, 1, 2], [1, 0], [1.0, 2.0]]
    """
    w = weight2d.detach().to(torch.float32).cpu().numpy()
    rows, cols = np.nonzero(w)
    indptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(rows, minlength=w.shape[0]))
    return indptr, cols.astype(np.int32), w[rows, cols].astype(np.float32)


def sell_matmul(slice_ptr: np.ndarray, cols: np.ndarray, vals: np.ndarray, rows: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """``out[b, :] = W @ x[b, :]`` for a SELL-16 weight; ``x`` (B, in) and ``out`` (B, out) float32, C-contiguous.

    Example:
        >>> import numpy as np, torch
        >>> out = np.zeros((1, 3), dtype=np.float32)
        >>> sell_matmul(*sell_from_dense(torch.eye(3)), np.ones((1, 3), dtype=np.float32), out); out.tolist()
        [[1.0, 1.0, 1.0]]
    """
    _sell_matmul(slice_ptr, cols, vals, rows, x, out)


def csr_rows_matmul(indptr: np.ndarray, cols: np.ndarray, vals: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """``out[n] = W @ x[n]`` for a CSR weight (M, K); ``x`` (N, K, L) and ``out`` (N, M, L) float32, C-contiguous.

    Example:
        >>> import numpy as np, torch
        >>> out = np.zeros((1, 2, 1), dtype=np.float32)
        >>> csr_rows_matmul(*csr_from_dense(torch.tensor([[0.0, 2.0], [1.0, 0.0]])), np.ones((1, 2, 1), np.float32), out)
        >>> out.ravel().tolist()
        [2.0, 1.0]
    """
    _csr_rows_matmul(indptr, cols, vals, x, out)
