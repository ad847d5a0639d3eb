"""Rows of a layer's input or output that carry data: for text batches, the real tokens only.

A batch of sentences is padded to its longest sentence. The padding positions
still flow through every layer, but nothing reads their results (mean pooling
and attention both mask them), so a statistic or a least-squares fit over them
spends its capacity on positions that never matter; in a batch of 32 short
sentences they are often a third of all rows. Layers see a text batch's
positions as their leading ``(batch, tokens)`` dimensions, so an
``(input_ids, attention_mask)`` model input tells which rows are real.

Example:
    >>> import torch
    >>> ids, mask = torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 0], [1, 0, 0]])
    >>> m = batch_mask((ids, mask))
    >>> real_rows(torch.arange(12.0).reshape(2, 3, 2), m).tolist()
    [[0.0, 1.0], [2.0, 3.0], [6.0, 7.0]]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def batch_mask(batch: tuple[Any, ...]) -> Tensor | None:
    """The attention mask of an ``(input_ids, attention_mask)`` model input as booleans, else None.

    Recognised by shape and content: two 2-D tensors of one shape, the second holding only 0 and 1.

    Example:
        >>> batch_mask((torch.zeros(2, 8),)) is None
        True
    """
    if len(batch) != 2 or not all(isinstance(t, Tensor) for t in batch):
        return None
    ids, mask = batch
    if ids.ndim != 2 or mask.shape != ids.shape or not bool(((mask == 0) | (mask == 1)).all()):
        return None
    return mask.bool()


def real_rows(t: Tensor, mask: Tensor | None) -> Tensor:
    """``t`` as a matrix of rows (features last), keeping only the real tokens when ``mask`` fits its leading dimensions.

    Example:
        >>> real_rows(torch.zeros(4, 5), None).shape
        torch.Size([4, 5])
    """
    if mask is not None and t.ndim >= 3 and tuple(t.shape[:2]) == tuple(mask.shape):
        return t[mask.to(t.device)].reshape(-1, t.shape[-1])
    return t.reshape(-1, t.shape[-1])


__all__ = ["batch_mask", "real_rows"]
