"""Pruning: exact unstructured pruning, its criteria, schedules and mask folding.

Example:
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> _ = ds.prune_(model, ds.MagnitudePruning(sparsity=0.8))
    >>> round(ds.prune.sparsity(model), 6)
    0.8
"""

from __future__ import annotations

from .criteria import CRITERIA, fisher_diagonal, magnitude_scores, obd_scores, random_scores
from .fold import fold_masks
from .magnitude import MagnitudePruning, layer_kind, lowest_k, magnitude_prune, select_targets
from .masks import PruningMask, apply_mask, get_mask, iter_masks, masks, restore_masks, sparsity
from .schedules import GradualPruning, IterativePruning, OneShotPruning, scaled_config

__all__ = [
    "CRITERIA",
    "GradualPruning",
    "IterativePruning",
    "MagnitudePruning",
    "OneShotPruning",
    "PruningMask",
    "apply_mask",
    "fisher_diagonal",
    "fold_masks",
    "get_mask",
    "iter_masks",
    "layer_kind",
    "lowest_k",
    "magnitude_prune",
    "magnitude_scores",
    "masks",
    "obd_scores",
    "random_scores",
    "restore_masks",
    "scaled_config",
    "select_targets",
    "sparsity",
]

from .structured import ChannelPruning  # noqa: E402  (physically removes channels; see structured.py)

__all__ += ["ChannelPruning"]
