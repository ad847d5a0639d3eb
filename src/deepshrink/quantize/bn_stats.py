"""BatchNorm statistics refresh: re-estimate running means and variances of a compressed model.

The last step of "And the Bit Goes Down" (Stock et al. 2019): after the
codebooks are fine-tuned, the BatchNorm running statistics still average over
batches seen while the weights were changing (and augmented). A clean pass
over training data in train mode, with a cumulative average instead of an
exponential one, re-estimates them for the final weights. No parameter changes.

In a recipe, a stage of its own (it needs the recipe's data)::

    - name: bn-stats
      config: {type: batchnorm_stats, samples: 2000}

Example:
    >>> import torch, deepshrink as ds
    >>> model = ds.models.create("resnet_small", image_size=8)
    >>> r = ds.quantize_(model, BatchNormStats(samples=32), data=torch.rand(32, 1, 8, 8))
    >>> r.figures["layers"], float(model.stem[1].running_mean.abs().sum()) > 0
    (9, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config, check_range, register_config
from ..dispatch import Report, quantize_
from ..errors import ConfigError
from .pq_calibrate import calibration_batches


@register_config("batchnorm_stats")
@dataclass(frozen=True)
class BatchNormStats(Config):
    """Re-estimate BatchNorm running statistics on ``samples`` training items (cumulative average).

    Example:
        >>> BatchNormStats(samples=0)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: BatchNormStats.samples=0 is invalid: expected an integer in [1, inf)
    """

    samples: int = 2000
    batch_size: int = 100
    seed: int = 0

    def validate(self) -> None:
        check_range(self, "samples", 1, None, integer=True)
        check_range(self, "batch_size", 1, None, integer=True)
        check_range(self, "seed", 0, 2**63 - 1, integer=True)


def refresh_batchnorm(model: nn.Module, data: Any, cfg: BatchNormStats | None = None) -> int:
    """Recompute every BatchNorm layer's running statistics on ``data``; returns how many layers.

    Only the statistics change; the model keeps its train/eval mode.

    Example:
        >>> m = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        >>> refresh_batchnorm(m, torch.randn(50, 3))
        1
    """
    cfg = cfg or BatchNormStats()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    batches = calibration_batches(model, data, cfg.samples, cfg.batch_size, cfg.seed)
    momenta = [m.momentum for m in norms]
    was_training = model.training
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts the same
        model.train()
        with torch.no_grad():
            for batch in batches:
                model(*(a.to(device) for a in batch.args))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)


@quantize_.register(BatchNormStats)
def _batchnorm_stats(model: nn.Module, cfg: BatchNormStats, *, data: Any = None, **_: Any) -> Report:
    if data is None:
        raise ConfigError("data", None, "training data to re-estimate BatchNorm statistics on", "BatchNormStats")
    report = Report(method="batchnorm_stats")
    report.figures["layers"] = refresh_batchnorm(model, data, cfg)
    return report


__all__ = ["BatchNormStats", "refresh_batchnorm"]
