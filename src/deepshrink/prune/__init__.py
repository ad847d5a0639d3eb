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

# --- sparse training and lottery tickets (prune/sparse_training.py, prune/lottery.py) ---
from .masks import set_mask  # noqa: E402
from .sparse_training import SET, RigL, SparseMomentum, SparseTrainingConfig  # noqa: E402

from .lottery import LotteryConfig, RewindPoint, prune_round, rewind_, run_lottery, weights_of  # noqa: E402

__all__ += ["LotteryConfig", "RewindPoint", "SET", "RigL", "SparseMomentum", "SparseTrainingConfig", "prune_round", "rewind_",
            "run_lottery", "set_mask", "weights_of"]

# --- channel importance criteria, SCOP and network slimming (prune/importance.py, activation_importance.py, scop.py, slimming.py) ---
from .activation_importance import APoZImportance, MeanActivationImportance  # noqa: E402
from .importance import (  # noqa: E402
    BNScaleImportance,
    FPGMImportance,
    L1Importance,
    L2Importance,
    RandomImportance,
    TaylorImportance,
    build_importance,
)
from .scop import Knockoffs, SCOPImportance  # noqa: E402
from .slimming import NetworkSlimming, SlimmingPenalty  # noqa: E402

__all__ += [
    "APoZImportance",
    "BNScaleImportance",
    "FPGMImportance",
    "Knockoffs",
    "L1Importance",
    "L2Importance",
    "MeanActivationImportance",
    "NetworkSlimming",
    "RandomImportance",
    "SCOPImportance",
    "SlimmingPenalty",
    "TaylorImportance",
    "build_importance",
]
