"""Fold pruning masks into plain weights, for export or for code that wants an ordinary module.

Folding replaces the parametrized tensor by a plain ``nn.Parameter`` holding
its effective value (exact zeros where pruned). Every parametrization stacked
on that tensor is folded with it (a shared codebook on top of a mask too),
since the effective value is what they compute together.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.prune.masks import apply_mask
    >>> layer = nn.Linear(2, 2)
    >>> apply_mask(layer, "weight", torch.eye(2, dtype=torch.bool))
    >>> fold_masks(layer)
    1
    >>> type(layer.weight).__name__, int((layer.weight == 0).sum())
    ('Parameter', 2)
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize

from .masks import iter_masks


def fold_masks(model: nn.Module) -> int:
    """Replace every masked tensor by a plain parameter with its effective value; returns the count.

    Example:
        >>> from torch import nn
        >>> fold_masks(nn.Linear(2, 2))
        0
    """
    found = [(module, name) for _, module, name, _ in iter_masks(model)]
    for module, name in found:
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return len(found)
