"""Channel importance criteria for structured pruning, as classes that score a coupled group.

Each criterion scores every channel of a coupled group (a conv's filters plus
the batch-norm scales and next-layer inputs tied to them); the lowest scores
are removed. The weight-based criteria reuse Torch-Pruning's implementations,
so the scores follow the published definitions:

- ``"l1"`` / ``"l2"``: filter norm (Li et al. 2017), :class:`L1Importance` / :class:`L2Importance`.
- ``"fpgm"``: distance to the geometric median (He et al. 2019), :class:`FPGMImportance`.
- ``"bn_scale"``: batch-norm scaling factor (network slimming, Liu et al. 2017),
  :class:`BNScaleImportance`; train with :class:`~deepshrink.prune.slimming.SlimmingPenalty` first.
- ``"taylor"``: first-order Taylor expansion of the loss (Molchanov et al. 2017/2019),
  :class:`TaylorImportance`; each training sample's loss change, squared, then averaged (see :mod:`.taylor`).
- ``"mean_activation"`` / ``"apoz"``: activation statistics measured on data
  (Molchanov et al. 2017; Hu et al. 2016), see :mod:`.activation_importance`.
- ``"scop"``: scientific-control pruning with knockoff features (Tang et al. 2020), see :mod:`.scop`.
- ``"obs"``: Optimal Brain Surgeon selection of the channels a least-squares refit can best do
  without (ZipLM, Kurtic et al. 2023), for channels read by Linear layers; use with
  ``reconstruct=True``, see :mod:`.obs`.
- ``"random"``: a control; seeded by the caller.

:func:`build_importance` is the one entry point: it runs whatever data pass a
criterion needs (gradients, activation statistics, SCOP's factor training)
*before* pruning and returns a Torch-Pruning importance object. Data-driven
scores refer to the channels as they are when it runs: build it again after
channels have been removed.

Example:
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet5")
    >>> imp = build_importance(ds.ChannelPruning(importance="l1"), model, ds.models.example_inputs(model), None)
    >>> type(imp).__name__, needs_data("apoz"), needs_data("l1")
    ('L1Importance', True, False)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from ..errors import ConfigError
from .activation_importance import APoZImportance, MeanActivationImportance, _device, calibration_inputs, labelled_batches
from .taylor import TaylorImportance

if TYPE_CHECKING:
    from ..data.bundle import DataBundle


class L1Importance(tp.importance.GroupMagnitudeImportance):
    """L1 norm of each filter, summed over the coupled group (Li et al. 2017).

    Example:
        >>> L1Importance().p
        1
    """

    def __init__(self) -> None:
        super().__init__(p=1)


class L2Importance(tp.importance.GroupMagnitudeImportance):
    """L2 (squared) norm of each filter over the coupled group.

    Example:
        >>> L2Importance().p
        2
    """

    def __init__(self) -> None:
        super().__init__(p=2)


def channel_rows(layer: nn.Module, as_input: bool) -> Tensor:
    """One row of weights per channel of a Conv or Linear layer: its output filters, or what reads each input.

    For a grouped convolution, input channel ``j`` of group ``g`` is read only by
    the filters of group ``g``, so its row holds those weights (``out/groups * k*k``
    values); every input channel gets its own row.

    Example:
        >>> channel_rows(nn.Conv2d(4, 6, 3, groups=2), as_input=True).shape
        torch.Size([4, 27])
        >>> channel_rows(nn.Linear(5, 3), as_input=False).shape
        torch.Size([3, 5])
    """
    w = layer.weight.detach()
    transposed = bool(getattr(layer, "transposed", False))
    if isinstance(layer, nn.Linear):
        return (w.t() if as_input else w).flatten(1)
    groups = int(getattr(layer, "groups", 1))
    if transposed:  # weight is (in, out / groups, *k)
        if as_input:
            return w.flatten(1)
        in_g = w.shape[0] // groups
        return w.reshape(groups, in_g, w.shape[1], -1).permute(0, 2, 1, 3).reshape(groups * w.shape[1], -1)
    if not as_input:
        return w.flatten(1)
    out_g, in_g = w.shape[0] // groups, w.shape[1]
    return w.reshape(groups, out_g, in_g, -1).permute(0, 2, 1, 3).reshape(groups * in_g, -1)


class FPGMImportance(tp.importance.FPGMImportance):
    """Filter pruning via the geometric median (He et al. 2019): filters close to the others are redundant.

    Each channel's score is the sum of its distances to the other channels of its
    layer, over the Conv and Linear layers of the coupled group (their filters, and
    the weights that read the channel downstream), averaged over the group.
    Torch-Pruning's own version fails on the inputs of grouped convolutions
    (ResNeXt, RegNet); here every input channel gets the weights that really read it.

    Example:
        >>> FPGMImportance().p
        2
    """

    def __init__(self) -> None:
        super().__init__(p=2)

    @torch.no_grad()
    def __call__(self, group: Any, **_: Any) -> Tensor | None:
        scores: list[Tensor] = []
        indices: list[list[int]] = []
        for i, (dep, idxs) in enumerate(group):
            layer, fn = dep.layer, dep.pruning_fn
            if not isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear)):
                continue  # norms carry no filter geometry
            if fn in (tp.prune_conv_out_channels, tp.prune_linear_out_channels):
                rows = channel_rows(layer, as_input=False)
            elif fn in (tp.prune_conv_in_channels, tp.prune_linear_in_channels):
                rows = channel_rows(layer, as_input=True)
            else:
                continue
            local = rows[list(idxs)].abs().pow(self.p).float()
            distances = torch.cdist(local.unsqueeze(0), local.unsqueeze(0), p=2).squeeze(0)
            scores.append(distances.abs().sum(dim=0))
            indices.append(group[i].root_idxs)
        if not scores:
            return None
        return self._normalize(self._reduce(scores, indices), self.normalizer)


class BNScaleImportance(tp.importance.BNScaleImportance):
    """|gamma| of the batch norm after each channel (network slimming, Liu et al. 2017).

    Groups without a batch norm have no score and are left whole.

    Example:
        >>> BNScaleImportance().p
        1
    """


class RandomImportance(tp.importance.RandomImportance):
    """Uniform random scores: the control every criterion must beat. Uses torch's global generator.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> isinstance(RandomImportance(), tp.importance.Importance)
        True
    """


def _scop(config: Any, model: nn.Module, inputs: tuple[Any, ...], data: Any) -> tp.importance.Importance:
    from .scop import SCOPImportance

    return SCOPImportance.learn(model, data, config, inputs=inputs)


def _batch_size(config: Any) -> int:
    return int(getattr(config, "batch_size", 32))


def _activation(cls: type[MeanActivationImportance] | type[APoZImportance]) -> Callable[..., tp.importance.Importance]:
    def build(config: Any, model: nn.Module, inputs: tuple[Any, ...], data: Any) -> tp.importance.Importance:
        batches = calibration_inputs(model, inputs, data, _batch_size(config), config.batches, getattr(config, "seed", 0))
        return cls.measure(model, inputs, batches)

    return build


def _obs(config: Any, model: nn.Module, inputs: tuple[Any, ...], data: Any) -> tp.importance.Importance:
    from .heads import find_attention
    from .obs import OBSImportance

    batches = calibration_inputs(model, inputs, data, _batch_size(config), config.batches, getattr(config, "seed", 0))
    head_dims = {proj: a.head_dim for a in find_attention(model) for proj in a.projections}
    return OBSImportance.measure(model, batches, head_dims)


def _taylor(config: Any, model: nn.Module, inputs: tuple[Any, ...], data: Any) -> tp.importance.Importance:
    seed, size = getattr(config, "seed", 0), _batch_size(config)
    batches: list[tuple[tuple[Any, ...], Tensor | None]]
    if data is not None and getattr(data, "task", None) == "classification":
        labelled = labelled_batches(data, size, config.batches, seed=seed, shuffle=True, device=_device(model))
        batches = [((x,), y) for x, y in labelled]
    else:  # no labels: the outputs' energy on training inputs (sentences), else on the example inputs
        batches = [(b, None) for b in calibration_inputs(model, inputs, data, size, config.batches, seed)]
    return TaylorImportance.measure(model, inputs, batches)


# name -> builder(config, model, inputs, data). Weight-only criteria ignore the data.
_BUILDERS: dict[str, Callable[[Any, nn.Module, tuple[Any, ...], Any], tp.importance.Importance]] = {
    "l1": lambda *_: L1Importance(),
    "l2": lambda *_: L2Importance(),
    "fpgm": lambda *_: FPGMImportance(),
    "taylor": _taylor,
    "bn_scale": lambda *_: BNScaleImportance(),
    "random": lambda *_: RandomImportance(),
    "mean_activation": _activation(MeanActivationImportance),
    "apoz": _activation(APoZImportance),
    "scop": _scop,
    "obs": _obs,
}

IMPORTANCES: tuple[str, ...] = tuple(_BUILDERS)

# Criteria measured on data (training batches; the example inputs stand in where labels are not needed).
_DATA_BASED = frozenset({"taylor", "mean_activation", "apoz", "scop", "obs"})


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ConfigError("importance", name, "one of " + ", ".join(repr(n) for n in IMPORTANCES), "ChannelPruning")


def build_importance(config: Any, model: nn.Module, inputs: tuple[Any, ...], data: DataBundle | None = None) -> tp.importance.Importance:
    """The importance object for ``config.importance``, after any data pass it needs.

    ``config`` is a :class:`~deepshrink.ChannelPruning`; ``inputs`` the example
    inputs (a tuple for ``model(*inputs)``); ``data`` a DataBundle or None.
    Taylor measures each sample's first-order loss change and the activation
    criteria their statistics on ``config.batches`` random training batches
    (the example inputs without data; parameters' ``.grad`` untouched); SCOP learns its control factors on the training split
    and raises ConfigError without classification data. The model's train/eval
    mode is left as it was. Call it again after channels were removed.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet5")
        >>> x = ds.models.example_inputs(m, batch_size=4)
        >>> imp = build_importance(ds.ChannelPruning(importance="apoz"), m, x, None)
        >>> len(imp.scores[m.conv1])
        20
    """
    _check_name(config.importance)
    was_training = model.training
    model.eval()  # measurements must not move batch-norm statistics
    try:
        return _BUILDERS[config.importance](config, model, tuple(inputs), data)
    finally:
        model.train(was_training)


def make_importance(name: str) -> tp.importance.Importance:
    """A fresh importance object for a criterion that needs no data pass (see :func:`build_importance`).

    Example:
        >>> type(make_importance("fpgm")).__name__
        'FPGMImportance'
    """
    _check_name(name)
    if name in _DATA_BASED:
        raise ConfigError("importance", name, "a criterion without a data pass here; use build_importance() for " + repr(name), "ChannelPruning")
    return _BUILDERS[name](None, nn.Module(), (), None)


def needs_data(name: str) -> bool:
    """Whether criterion ``name`` is measured on data (training batches) rather than read from the weights.

    Example:
        >>> needs_data("scop"), needs_data("fpgm")
        (True, False)
    """
    return name in _DATA_BASED


__all__ = [
    "BNScaleImportance",
    "FPGMImportance",
    "IMPORTANCES",
    "L1Importance",
    "L2Importance",
    "RandomImportance",
    "TaylorImportance",
    "build_importance",
    "make_importance",
    "needs_data",
]
