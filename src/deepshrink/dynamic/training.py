"""Training early exits on the shared engine: jointly with the backbone, or on a frozen backbone.

Joint training (BranchyNet, MSDNet) minimises a weighted sum of every exit's
cross-entropy and the final output's; frozen-backbone training fits only the
heads, leaving the network's own outputs exactly as they were.

Example:
    >>> import deepshrink as ds
    >>> data = ds.data.load("synthetic:classification:100")
    >>> model = ds.models.create("lenet300", in_features=64, num_classes=4)
    >>> _ = ds.add_exits_(model, ds.EarlyExits(after=["fc1"]), data=data)
    >>> ds.train_exits(model, data, ds.TrainConfig(epochs=1, progress=False), freeze_backbone=True)["steps"]
    2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.bundle import DataBundle
from ..train.batches import split_batch
from ..train.callbacks import Callback, TrainState
from ..train.config import TrainConfig
from ..train.engine import Objective, train
from .exits import exit_heads, exit_outputs


def exit_objective(weights: Sequence[float] | None = None, label_smoothing: float = 0.0) -> Objective:
    """Engine objective: ``sum_k weights[k] * CE(exit_k)`` over the exits and the final output (last weight).

    ``weights=None`` weighs every output 1.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet300", in_features=8, num_classes=3)
        >>> _ = ds.add_exits_(m, ds.EarlyExits(after=["fc2"]))
        >>> exit_objective([0.5, 1.0])(m, (torch.zeros(4, 8), torch.zeros(4, dtype=torch.long)), None).shape
        torch.Size([4])
    """
    if weights is not None and (not all(isinstance(w, (int, float)) and w >= 0 for w in weights) or not any(weights)):
        raise ValueError(f"exit loss weights {weights!r} must be non-negative numbers, not all zero")

    def objective(model: nn.Module, batch: Any, state: TrainState | None) -> Tensor:
        x, y = split_batch(batch)
        outputs = exit_outputs(model, x)
        w = list(weights) if weights is not None else [1.0] * len(outputs)
        if len(w) != len(outputs):
            raise ValueError(f"{len(w)} exit loss weights for {len(outputs)} outputs ({len(outputs) - 1} exits + the final one)")
        loss = torch.zeros((), device=y.device)
        for wk, logits in zip(w, outputs):
            if wk:
                loss = loss + wk * F.cross_entropy(logits.float(), y, reduction="none", label_smoothing=label_smoothing)
        return loss

    return objective


class FrozenBackbone(Callback):
    """Keeps every backbone module in eval mode (batch-norm statistics and dropout frozen) while the heads train.

    Example:
        >>> FrozenBackbone(nn.Linear(2, 2)).state_dict()
        {}
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def on_epoch_begin(self, state: TrainState) -> None:
        heads = set(exit_heads(self.model).modules())
        for module in self.model.modules():
            if module is not self.model and module not in heads:
                module.eval()


def train_exits(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    *,
    weights: Sequence[float] | None = None,
    freeze_backbone: bool = False,
) -> dict[str, Any]:
    """Train a model's exits (and, unless ``freeze_backbone``, the backbone) with :func:`exit_objective`.

    With ``freeze_backbone`` only the heads' parameters are trained and the backbone's
    batch norms stay in eval mode, so the full network's outputs do not change.

    Example:
        >>> import deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:100")
        >>> m = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> _ = ds.add_exits_(m, ds.EarlyExits(after=["fc1", "fc2"]), data=data)
        >>> ds.train_exits(m, data, ds.TrainConfig(epochs=1, progress=False), weights=[0.3, 0.6, 1.0])["steps"]
        2
    """
    cfg = cfg or TrainConfig()
    heads = exit_heads(model)
    objective = exit_objective(weights, cfg.label_smoothing)
    if not freeze_backbone:
        return train(model, data, cfg, callbacks, objective=objective)
    head_params = {id(p) for p in heads.parameters()}
    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        if id(p) not in head_params:
            p.requires_grad_(False)
    try:
        return train(model, data, cfg, [FrozenBackbone(model), *callbacks], objective=objective)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(saved[name])
