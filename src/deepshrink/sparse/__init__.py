"""Sparse inference on the CPU: sparse Linear/Conv2d layers and ``to_sparse_``, which swaps them in where faster.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.sparse import SparseLinear
    >>> layer = nn.Linear(16, 8)
    >>> torch.allclose(SparseLinear.from_dense(layer)(torch.ones(1, 16)), layer(torch.ones(1, 16)), atol=1e-5)
    True
"""

from __future__ import annotations

from .convert import compare_speed, load_sparse_, sparse_form, sparsify_recorded_, to_sparse_
from .layers import SparseConv2d, SparseLinear

__all__ = ["SparseConv2d", "SparseLinear", "compare_speed", "load_sparse_", "sparse_form", "sparsify_recorded_", "to_sparse_"]
