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
from .errors import ConfigError, DeepshrinkError, FormatError, SpecError
from .train.callbacks import Callback, TrainState
from .train.config import TrainConfig

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "Config",
    "ConfigError",
    "DeepshrinkError",
    "FormatError",
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

__all__ += ["ChannelPruning"]
