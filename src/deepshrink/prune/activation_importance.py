"""Data-driven channel criteria: mean activation and APoZ, measured with forward hooks on real batches.

Both criteria look at what a layer's channels *produce* on data rather than at
their weights:

- **mean activation** (Molchanov et al. 2017, "Pruning Convolutional Neural
  Networks for Resource Efficient Inference"): the mean absolute value of a
  channel's activation; a channel that is nearly always small contributes little.
- **APoZ**, the average percentage of zeros (Hu et al. 2016, "Network
  Trimming"): the fraction of a channel's activations that a ReLU sets to zero.
  The score is ``1 - APoZ`` so that, like every criterion, low means "remove".
  For other activations (GELU, SiLU, leaky ReLU) it counts the outputs <= 0,
  which for a ReLU are exactly its zeros.

"Activation" means the layer's output after the batch norm and activation that
directly follow it. They are found on Torch-Pruning's traced graph: from each
conv/linear layer we follow the single chain of norms up to the first
activation function. The hook sits on the last module of that chain (the norm,
or the layer itself) and applies the activation to what it sees, because an
activation is often a functional call or one ``nn.ReLU`` shared by several
layers, which a hook cannot tell apart. A layer followed by no activation
(Caffe LeNet-5's convolutions feed a max-pool directly) is scored on its raw
output.

Scores are kept per layer; :class:`LayerScoreImportance` turns them into one
score per channel of a coupled group (the mean over the group's layers that
produce the channel, as Torch-Pruning reduces its own criteria).

Example:
    >>> import torch, deepshrink as ds
    >>> model = ds.models.create("cnn_small").eval()
    >>> x = torch.rand(8, 1, 28, 28)
    >>> stats = activation_statistics(model, (x[:1],), [(x,)])
    >>> tuple(stats.mean_abs[model.conv1].shape), float(stats.apoz[model.conv1].min()) >= 0
    ((8,), True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.pruner import function as tp_function

from ..errors import ConfigError
from ..data.token_rows import batch_mask, real_rows
from .output_layers import traced_outputs

# Activation functions by the name of their autograd node, as Torch-Pruning's tracer records them
# (an nn.ReLU module and F.relu both appear as "ReluBackward0"). Parameters that the graph does not
# record take their usual values (ReLU6 for Hardtanh, slope 0.01 for leaky ReLU).
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "Relu": F.relu,
    "Gelu": F.gelu,
    "Silu": F.silu,
    "Hardswish": F.hardswish,
    "Hardsigmoid": F.hardsigmoid,
    "Hardtanh": F.relu6,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Elu": F.elu,
    "LeakyRelu": F.leaky_relu,
    "Mish": F.mish,
    "Softplus": F.softplus,
}
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_OUT_FNS = (tp_function.prune_conv_out_channels, tp_function.prune_linear_out_channels)


def _activation_of(op: nn.Module) -> Callable[[Tensor], Tensor] | None:
    grad_fn = str(getattr(op, "_grad_fn", ""))
    for key, fn in _ACTIVATIONS.items():
        if grad_fn.startswith(key + "Backward"):
            return fn
    return None


def scored_layers(model: nn.Module) -> list[nn.Module]:
    """The conv and linear layers of ``model`` whose output channels a criterion scores.

    Example:
        >>> import deepshrink as ds
        >>> len(scored_layers(ds.models.create("lenet5")))
        4
    """
    return [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def _channel_dim(layer: nn.Module) -> int:
    # Linear layers (and the norms after them) keep channels last; convs keep them in dim 1.
    return -1 if isinstance(layer, nn.Linear) else 1


def activation_chains(
    model: nn.Module, inputs: tuple[Any, ...], layers: Sequence[nn.Module]
) -> dict[nn.Module, tuple[nn.Module, Callable[[Tensor], Tensor] | None]]:
    """For each layer: the module whose output to hook (itself or the norm after it) and the activation after that.

    Example:
        >>> import torch, deepshrink as ds
        >>> m = ds.models.create("resnet_small").eval()
        >>> chains = activation_chains(m, (torch.zeros(1, 1, 28, 28),), [m.stem[0]])
        >>> chains[m.stem[0]][0] is m.stem[1], chains[m.stem[0]][1] is torch.nn.functional.relu
        (True, True)
    """
    with torch.enable_grad():  # Torch-Pruning traces through autograd
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=inputs, output_transform=traced_outputs)
    chains: dict[nn.Module, tuple[nn.Module, Callable[[Tensor], Tensor] | None]] = {}
    for layer in layers:
        node = dg.module2node.get(layer)
        hooked: nn.Module = layer
        act = None
        while node is not None and len(node.outputs) == 1:
            nxt = node.outputs[0]
            if isinstance(nxt.module, _NORMS) and len(nxt.inputs) == 1:
                hooked, node = nxt.module, nxt
                continue
            act = _activation_of(nxt.module)
            break
        chains[layer] = (hooked, act)
    return chains


@dataclass
class ActivationStatistics:
    """Per-layer channel statistics of the activations: mean |a| and the fraction of a <= 0 (APoZ).

    Example:
        >>> ActivationStatistics().count
        0
    """

    mean_abs: dict[nn.Module, Tensor] = field(default_factory=dict)
    apoz: dict[nn.Module, Tensor] = field(default_factory=dict)
    count: int = 0  # calibration batches seen


def activation_statistics(
    model: nn.Module, inputs: tuple[Any, ...], batches: Iterable[tuple[Any, ...]], layers: Sequence[nn.Module] | None = None
) -> ActivationStatistics:
    """Run ``model(*batch)`` on every batch and measure each layer's channel activations.

    ``inputs`` are the example inputs used to trace the graph (to find the norm
    and activation that follow each layer); ``batches`` are the calibration data.

    Example:
        >>> import torch, deepshrink as ds
        >>> m = ds.models.create("lenet300").eval()
        >>> s = activation_statistics(m, (torch.rand(1, 784),), [(torch.rand(16, 784),)])
        >>> tuple(s.apoz[m.fc1].shape), s.count
        ((300,), 1)
    """
    layers = list(layers) if layers is not None else scored_layers(model)
    chains = activation_chains(model, inputs, layers)
    sums: dict[nn.Module, Tensor] = {}
    nonpos: dict[nn.Module, Tensor] = {}
    counts: dict[nn.Module, int] = {}
    mask: list[Tensor | None] = [None]  # the attention mask of the batch being run, if it is text

    def make_hook(layer: nn.Module, act: Callable[[Tensor], Tensor] | None, channel_dim: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, out: Any) -> None:
            if not isinstance(out, Tensor):
                return
            a = act(out) if act is not None else out
            a = a.detach().float().movedim(channel_dim, -1)
            a = real_rows(a, mask[0])  # text: real tokens only, the padding is read by nothing
            sums[layer] = sums.get(layer, 0) + a.abs().sum(0)  # type: ignore[operator]
            nonpos[layer] = nonpos.get(layer, 0) + (a <= 0).sum(0).float()  # type: ignore[operator]
            counts[layer] = counts.get(layer, 0) + a.shape[0]

        return hook

    handles = [hooked.register_forward_hook(make_hook(layer, act, _channel_dim(layer))) for layer, (hooked, act) in chains.items()]
    stats = ActivationStatistics()
    try:
        with torch.no_grad():
            for batch in batches:
                mask[0] = batch_mask(tuple(batch))
                model(*batch)
                stats.count += 1
    finally:
        for h in handles:
            h.remove()
    if stats.count == 0:
        raise ValueError("no calibration batches: pass data with at least one training item")
    for layer in sums:
        stats.mean_abs[layer] = sums[layer] / counts[layer]
        stats.apoz[layer] = nonpos[layer] / counts[layer]
    return stats


def _out_size(layer: nn.Module) -> int:
    if isinstance(layer, nn.modules.conv._ConvNd) and layer.transposed:
        return layer.weight.shape[1] * layer.groups
    return layer.weight.shape[0]


class LayerScoreImportance(tp.importance.GroupMagnitudeImportance):
    """A group criterion from precomputed per-layer channel scores (higher = keep).

    For a coupled group, the score of a channel is the mean of the scores of
    the group's layers that produce it (a residual stream has several), like
    Torch-Pruning's own group reduction. Groups with no scored layer return
    None, which Torch-Pruning treats as "do not prune this group".

    Example:
        >>> import torch, torch_pruning as tp
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> dg = tp.DependencyGraph().build_dependency(m, example_inputs=torch.zeros(1, 4))
        >>> group = dg.get_pruning_group(m[0], tp.prune_linear_out_channels, idxs=[0, 1, 2])
        >>> LayerScoreImportance({m[0]: torch.tensor([3.0, 1.0, 2.0])})(group).tolist()
        [3.0, 1.0, 2.0]
    """

    def __init__(self, scores: dict[nn.Module, Tensor], normalizer: str | None = None) -> None:
        super().__init__(p=1, group_reduction="mean", normalizer=normalizer)
        self.scores = scores

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor | None:
        imps: list[Tensor] = []
        root_idxs: list[list[int]] = []
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            if dep.handler not in _OUT_FNS or layer not in self.scores:
                continue
            score = self.scores[layer]
            if len(score) != _out_size(layer):
                raise RuntimeError(
                    f"channel scores of a {type(layer).__name__} were measured with {len(score)} channels but it now has "
                    f"{_out_size(layer)}: build the importance again (build_importance) after each pruning step"
                )
            imps.append(score[torch.as_tensor(list(idxs), dtype=torch.long)].float())
            root_idxs.append(group[i].root_idxs)
        if not imps:
            return None
        return self._normalize(self._reduce(imps, root_idxs), self.normalizer)


class MeanActivationImportance(LayerScoreImportance):
    """Mean absolute activation per channel (Molchanov et al. 2017), measured on data.

    Example:
        >>> import torch, deepshrink as ds
        >>> m = ds.models.create("lenet300").eval()
        >>> imp = MeanActivationImportance.measure(m, (torch.rand(1, 784),), [(torch.rand(8, 784),)])
        >>> len(imp.scores[m.fc1])
        300
    """

    @classmethod
    def measure(cls, model: nn.Module, inputs: tuple[Any, ...], batches: Iterable[tuple[Any, ...]]) -> MeanActivationImportance:
        stats = activation_statistics(model, inputs, batches)
        # Divided by the group's mean, as for the magnitude criteria, so global ranking compares layers fairly.
        return cls(stats.mean_abs, normalizer="mean")


class APoZImportance(LayerScoreImportance):
    """``1 - APoZ``: the fraction of a channel's activations that are positive (Hu et al. 2016), measured on data.

    Example:
        >>> import torch, deepshrink as ds
        >>> m = ds.models.create("lenet300").eval()
        >>> imp = APoZImportance.measure(m, (torch.rand(1, 784),), [(torch.rand(8, 784),)])
        >>> bool(((imp.scores[m.fc1] >= 0) & (imp.scores[m.fc1] <= 1)).all())
        True
    """

    @classmethod
    def measure(cls, model: nn.Module, inputs: tuple[Any, ...], batches: Iterable[tuple[Any, ...]]) -> APoZImportance:
        stats = activation_statistics(model, inputs, batches)
        # A fraction in [0, 1] already compares across layers: no normalisation.
        return cls({k: 1.0 - v for k, v in stats.apoz.items()}, normalizer=None)


# --------------------------------------------------------------------------- calibration data


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def labelled_batches(
    data: Any, batch_size: int, n_batches: int | None, *, seed: int = 0, shuffle: bool = False, device: torch.device | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` batches of ``data.train`` (a classification DataBundle), on ``device``.

    ``n_batches=None`` runs one epoch. Shuffling uses its own seeded generator,
    so the global random state is left alone.

    Example:
        >>> import deepshrink as ds
        >>> d = ds.data.load("synthetic:classification:100")
        >>> [tuple(x.shape) for x, y in labelled_batches(d, 32, 2)]
        [(32, 1, 8, 8), (32, 1, 8, 8)]
    """
    from ..train.batches import fetch, split_batch

    if data is None or getattr(data, "task", None) != "classification":
        raise ConfigError("data", getattr(data, "name", None), "a classification DataBundle whose train split holds (input, label) pairs")
    n = len(data.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    for b, start in enumerate(range(0, n, batch_size)):
        if n_batches is not None and b >= n_batches:
            break
        x, y = split_batch(fetch(data.train, order[start : start + batch_size]))
        yield (x.to(device) if device is not None else x), (y.to(device) if device is not None else y)


def calibration_batches(model: nn.Module, data: Any, batches: int, batch_size: int = 32, seed: int = 0) -> list[tuple[Any, ...]]:
    """Model-input tuples from training items of ``data`` drawn at random (seeded; images, or sentences tokenized by the model).

    Random rather than the first items: a training split grouped by class would
    otherwise give a fit to one class.

    Example:
        >>> import deepshrink as ds
        >>> b = calibration_batches(ds.models.create("lenet5"), ds.data.load("digits"), 2, 8)
        >>> len(b), tuple(b[0][0].shape)
        (2, (8, 1, 8, 8))
    """
    from ..train.batches import fetch

    out: list[tuple[Any, ...]] = []
    n = len(data.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for i in range(batches):
        idx = order[i * batch_size : (i + 1) * batch_size]
        if len(idx) == 0:
            break
        items = fetch(data.train, idx)
        if getattr(data, "task", None) == "text":
            tokens = model.tokenize(list(items))  # type: ignore[operator]
            out.append((tokens["input_ids"], tokens["attention_mask"]))
        else:
            out.append((items[0],))
    return out


def calibration_inputs(
    model: nn.Module, inputs: tuple[Any, ...], data: Any, batch_size: int, n_batches: int, seed: int = 0
) -> list[tuple[Any, ...]]:
    """Model inputs to measure activations on: ``n_batches`` random training batches (seeded), else the example inputs.

    The batches are drawn at random from the whole training split, not taken
    from its start: a split grouped by class would otherwise be measured on
    one class only. Sentences (a text bundle) are tokenized by the model's
    ``tokenize``. Without data, or with text but a model that cannot tokenize,
    the example inputs are the calibration batch.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> len(calibration_inputs(nn.Linear(2, 2), (torch.zeros(1, 2),), None, 32, 4))
        1
    """
    if data is None or not hasattr(data, "train") or len(data.train) == 0:
        return [tuple(inputs)]
    if getattr(data, "task", None) == "text" and not callable(getattr(model, "tokenize", None)):
        return [tuple(inputs)]
    device = _device(model)
    return [tuple(t.to(device) for t in batch) for batch in calibration_batches(model, data, n_batches, batch_size, seed=seed)]


__all__ = [
    "APoZImportance",
    "ActivationStatistics",
    "LayerScoreImportance",
    "MeanActivationImportance",
    "activation_chains",
    "activation_statistics",
    "calibration_batches",
    "calibration_inputs",
    "labelled_batches",
    "scored_layers",
]
