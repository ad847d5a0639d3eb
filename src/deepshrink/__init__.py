"""deepshrink: make trained PyTorch models smaller and faster.

The public verbs and configs, nothing else. See README.md for a tour.

Example:
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> ds.TrainConfig(epochs=1).epochs
    1
"""

from __future__ import annotations

from . import data, models
from .config import (
    Config,
    config_from_dict,
    config_from_json,
    config_from_yaml,
    config_to_dict,
    config_to_json,
    config_to_yaml,
    register_config,
)
from .dispatch import Report, add_exits_, factorize_, prune_, quantize_, share_
from .errors import ConfigError, DeepshrinkError, FormatError, SpecError, UnsupportedModelError
from .train.callbacks import Callback, TrainState
from .train.config import TrainConfig

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "Config",
    "ConfigError",
    "DeepshrinkError",
    "FormatError",
    "UnsupportedModelError",
    "Report",
    "SpecError",
    "TrainConfig",
    "TrainState",
    "add_exits_",
    "config_from_dict",
    "config_from_json",
    "config_from_yaml",
    "config_to_dict",
    "config_to_json",
    "config_to_yaml",
    "data",
    "factorize_",
    "models",
    "prune_",
    "quantize_",
    "register_config",
    "share_",
]

# --- training engine (train/) ---
from .train.engine import evaluate, finetune, train  # noqa: E402

__all__ += ["evaluate", "finetune", "train"]

# --- recipes (recipe.py) ---
from . import analysis  # noqa: E402
from .recipe import Recipe, Stage, load_recipe, run_recipe  # noqa: E402
from .train.embeddings import embedding_similarity  # noqa: E402

__all__ += ["Recipe", "Stage", "analysis", "embedding_similarity", "load_recipe", "run_recipe"]

# --- compressed file (codec/) ---
from . import codec  # noqa: E402
from .codec import SaveReport, decompress, export_onnx, export_safetensors, inspect, load, save  # noqa: E402

__all__ += ["SaveReport", "codec", "decompress", "export_onnx", "export_safetensors", "inspect", "load", "save"]
# --- pruning (prune/) ---
from . import prune  # noqa: E402
from .prune import GradualPruning, IterativePruning, MagnitudePruning, OneShotPruning, fold_masks  # noqa: E402

__all__ += ["GradualPruning", "IterativePruning", "MagnitudePruning", "OneShotPruning", "fold_masks", "prune"]

# --- weight sharing and quantization (quantize/) ---
from . import quantize  # noqa: E402
from .quantize import KMeansSharing, fold_sharing, kmeans1d  # noqa: E402

__all__ += ["KMeansSharing", "fold_sharing", "kmeans1d", "quantize"]

# --- structured pruning (prune/structured.py) ---
from .prune.structured import ChannelPruning  # noqa: E402
from .prune.blocks import BlockPruning  # noqa: E402  (depth: whole residual blocks; see prune/blocks.py)

__all__ += ["BlockPruning", "ChannelPruning"]

# --- distillation (distill/) ---
# The function deepshrink.distill takes the place of the subpackage's name on the package;
# the subpackage stays importable as deepshrink.distill.* (e.g. from deepshrink.distill import kd_loss).
from .distill import KD, distill  # noqa: E402

__all__ += ["KD", "distill"]

# --- sparse training, lottery tickets and sparse inference (prune/sparse_training.py, prune/lottery.py, sparse/) ---
from .prune.sparse_training import SET, RigL, SparseMomentum, SparseTrainingConfig  # noqa: E402

from . import sparse  # noqa: E402
from .prune.lottery import LotteryConfig, RewindPoint, rewind_, run_lottery  # noqa: E402
from .sparse import to_sparse_  # noqa: E402

__all__ += ["LotteryConfig", "RewindPoint", "SET", "RigL", "SparseMomentum", "SparseTrainingConfig", "rewind_", "run_lottery",
            "sparse", "to_sparse_"]

# --- channel criteria and network slimming (prune/importance.py, prune/scop.py, prune/slimming.py) ---
from .prune.slimming import NetworkSlimming, SlimmingPenalty  # noqa: E402

__all__ += ["NetworkSlimming", "SlimmingPenalty"]

# --- product quantization (quantize/pq.py, codec/pq_codec.py) ---
from .quantize import BatchNormStats, ProductQuantization, fold_pq  # noqa: E402

__all__ += ["BatchNormStats", "ProductQuantization", "fold_pq"]

# --- int8, QAT, binary and ternary quantization (quantize/int8.py, qat.py, binary.py) ---
from .quantize import QAT, BinaryWeights, Convert, Int8, TernaryWeights  # noqa: E402

__all__ += ["BinaryWeights", "Convert", "Int8", "QAT", "TernaryWeights"]

# --- early exits (dynamic/) ---
from . import dynamic  # noqa: E402
from .dynamic import EarlyExits, calibrate_exits, exit_report, train_exits  # noqa: E402

__all__ += ["EarlyExits", "calibrate_exits", "dynamic", "exit_report", "train_exits"]

# --- low rank and compact filters (factorize/) ---
from . import factorize  # noqa: E402
from .factorize import CP, SVD, DepthwiseSeparable, Fire, Separable, Tucker  # noqa: E402

__all__ += ["CP", "DepthwiseSeparable", "Fire", "SVD", "Separable", "Tucker", "factorize"]
