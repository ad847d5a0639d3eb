"""Network slimming (Liu et al. 2017): an L1 penalty on batch-norm scales during training, then prune by |gamma|.

Training with ``lambda * sum |gamma|`` over every batch norm's scale drives the
scales of unneeded channels towards zero, so that ``ChannelPruning(importance=
"bn_scale")`` afterwards removes channels the network has already learnt to do
without. The penalty is a training callback, :class:`SlimmingPenalty`, that
adds the subgradient ``lambda * sign(gamma)`` to the scales' gradients before
each optimizer step (as the authors' code does), so it works in the engine and
in a user's own loop. For recipes, the config :class:`NetworkSlimming` is a
stage whose fine-tuning runs with the penalty on:

    stages:
      - name: sparsity
        config: {type: network_slimming, strength: 0.0001}
        finetune: {epochs: 10}
      - name: prune
        config: {type: channel_pruning, ratio: 0.5, importance: bn_scale}
        finetune: {epochs: 8}

Example:
    >>> import deepshrink as ds
    >>> from torch import nn
    >>> data = ds.data.load("synthetic:classification:64")
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    >>> before = bn_l1(model)
    >>> _ = ds.finetune(model, data, ds.TrainConfig(epochs=1, lr=1e-2, progress=False), [SlimmingPenalty(strength=0.5)])
    >>> bn_l1(model) < before
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config, check_range, register_config
from ..dispatch import Report, prune_
from ..errors import ConfigError
from ..train.callbacks import Callback, TrainState


def bn_scales(model: nn.Module) -> dict[str, nn.Parameter]:
    """The scale (gamma) of every affine batch norm of ``model``, by module name.

    Example:
        >>> import deepshrink as ds
        >>> len(bn_scales(ds.models.create("resnet_small")))
        9
    """
    return {
        name: m.weight
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and isinstance(m.weight, nn.Parameter)
    }


def bn_l1(model: nn.Module) -> float:
    """sum |gamma| over every batch norm of ``model`` (what the slimming penalty shrinks).

    Example:
        >>> from torch import nn
        >>> bn_l1(nn.Sequential(nn.BatchNorm1d(3)))
        3.0
    """
    return float(sum(float(w.detach().abs().sum()) for w in bn_scales(model).values()))


class SlimmingPenalty(Callback):
    """Training callback: the L1 penalty ``strength * sum |gamma|`` on batch-norm scales (Liu et al. 2017).

    Adds its subgradient ``strength * sign(gamma)`` to ``gamma.grad`` after the
    backward pass, before the optimizer step. ``strength`` is lambda in the
    paper (1e-4 to 1e-5 for image classifiers).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from deepshrink import TrainState
        >>> bn = nn.BatchNorm1d(2)
        >>> bn.weight.grad = torch.zeros(2)
        >>> SlimmingPenalty(strength=0.1).on_before_step(TrainState(model=nn.Sequential(bn)))
        >>> bn.weight.grad.tolist()
        [0.10000000149011612, 0.10000000149011612]
    """

    def __init__(self, strength: float = 1e-4) -> None:
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
            raise ConfigError("strength", strength, "a number >= 0 (lambda of the L1 penalty, e.g. 1e-4)", "SlimmingPenalty")
        self.strength = float(strength)
        self._scales: list[nn.Parameter] | None = None

    def on_train_begin(self, state: TrainState) -> None:
        self._scales = list(bn_scales(state.model).values())
        if not self._scales:
            raise ConfigError("model", type(state.model).__name__, "a model with batch-norm layers for the slimming penalty", "SlimmingPenalty")

    @torch.no_grad()
    def on_before_step(self, state: TrainState) -> None:
        scales = self._scales if self._scales is not None else list(bn_scales(state.model).values())
        for w in scales:
            if w.grad is None:
                w.grad = torch.zeros_like(w)
            w.grad.add_(torch.sign(w), alpha=self.strength)

    def state_dict(self) -> dict[str, Any]:
        return {"strength": self.strength}  # stateless apart from its setting; saved to catch a mismatched resume

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if float(state.get("strength", self.strength)) != self.strength:
            raise ConfigError("strength", self.strength, f"the strength the checkpoint was made with ({state['strength']})", "SlimmingPenalty")


@register_config("network_slimming")
@dataclass(frozen=True)
class NetworkSlimming(Config):
    """Recipe stage for slimming's sparsity training: its fine-tuning runs with :class:`SlimmingPenalty`.

    Applying it (``prune_(model, NetworkSlimming(...))``) changes nothing yet:
    it checks that the model has batch norms and reports their current scales;
    the penalty acts during the stage's fine-tuning (``training_callbacks``), and
    a later ``ChannelPruning(importance="bn_scale")`` stage removes the channels.

    Fields:
        strength: lambda of the L1 penalty on the batch-norm scales.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("resnet_small")
        >>> r = ds.prune_(m, NetworkSlimming(strength=1e-4))
        >>> r.figures["bn_layers"], type(NetworkSlimming().training_callbacks(m)[0]).__name__
        (9, 'SlimmingPenalty')
    """

    strength: float = 1e-4

    def validate(self) -> None:
        check_range(self, "strength", 0, None)

    def training_callbacks(self, model: nn.Module) -> list[Callback]:
        """The callbacks a recipe adds to this stage's fine-tuning."""
        return [SlimmingPenalty(strength=self.strength)]


@prune_.register(NetworkSlimming)
def network_slimming(model: nn.Module, config: NetworkSlimming, **_: Any) -> Report:
    """Check the model for batch norms and report their scales; the penalty itself acts while training.

    Example:
        >>> import deepshrink as ds
        >>> ds.prune_(ds.models.create("lenet5"), NetworkSlimming())
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: NetworkSlimming.model='LeNet5' is invalid: expected a model with batch-norm layers (network slimming penalises their scales)
    """
    scales = bn_scales(model)
    if not scales:
        raise ConfigError("model", type(model).__name__, "a model with batch-norm layers (network slimming penalises their scales)", "NetworkSlimming")
    report = Report(method="network_slimming")
    report.figures.update({"bn_layers": len(scales), "bn_l1": bn_l1(model), "strength": config.strength})
    for name, w in scales.items():
        report.per_layer[name] = {"channels": w.numel(), "mean_abs_gamma": float(w.detach().abs().mean())}
    return report


__all__ = ["NetworkSlimming", "SlimmingPenalty", "bn_l1", "bn_scales", "network_slimming"]
