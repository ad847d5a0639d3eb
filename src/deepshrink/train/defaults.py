"""Default training settings per built-in model, chosen on the validation split.

benchmarks/tune_baselines.py compares candidate settings on mnist5k's
validation split; the winners are recorded here and used by
``deepshrink train`` when the user does not override them.
"""

from __future__ import annotations

from .config import TrainConfig

_DEFAULTS: dict[str, TrainConfig] = {
    # val 0.980 (candidates: benchmarks/results/tune_baselines.json)
    "lenet300": TrainConfig(epochs=150, batch_size=128, optimizer="sgd", lr=0.05, weight_decay=5e-4, augment="affine"),
    # val 0.992
    "lenet5": TrainConfig(epochs=60, batch_size=64, optimizer="sgd", lr=0.05, weight_decay=5e-4, augment="affine",
                          label_smoothing=0.1),
}
_GENERIC = TrainConfig(epochs=20, batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=1e-4)


def default_train_config(spec: str) -> TrainConfig:
    """The training settings `deepshrink train` uses for ``spec`` by default.

    Example:
        >>> default_train_config("lenet5").optimizer
        'sgd'
    """
    return _DEFAULTS.get(spec, _GENERIC)
