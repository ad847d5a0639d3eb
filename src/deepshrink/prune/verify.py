"""Check that structured pruning removed exactly what it says: zeroed channels equal removed channels.

A channel that contributes nothing (its filter, bias and norm shift set to zero)
can be removed without changing the model's outputs. So: prune a copy, read the
surgery log, zero in the original what the log removed, and compare the two
models' outputs. A mismatch means a coupled layer was missed (a residual branch,
a concatenation, a norm); this is the check the test suite runs over a zoo of
architectures, and a user can run it on their own model before trusting a pruning.

Example:
    >>> import torch, deepshrink as ds
    >>> model = ds.models.create("resnet_small")
    >>> result = removal_equivalence(model, ds.ChannelPruning(ratio=0.5), (torch.randn(2, 1, 28, 28),))
    >>> result["max_abs_diff"] < 1e-4 and result["param_fraction"] < 0.5
    True
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..dispatch import prune_
from ..surgery import surgery_log
from .output_layers import traced_outputs


# (tensor, dim, positions, values before): what zeroing changed, so that it can be put back.
Zeroed = list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]

# Layers whose removed channels are not the same as zeroed ones: a layer norm's statistics run over all of its
# features, so a zeroed feature still counts in its mean and variance; an embedding's features feed such norms.
_STATISTICS_COUPLED = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.instancenorm._InstanceNorm, nn.Embedding)


def zeroing_equals_removal(module: nn.Module) -> bool:
    """Whether a channel of ``module`` set to zero contributes exactly what a removed one does (nothing).

    True for convolutions, linear layers and batch norms; False for layer, group and instance norms
    (their statistics span every channel) and for embeddings, and for norm layers and weight-standardised
    convolutions of other libraries by class name (``...LayerNorm...``, ``...GroupNorm...``,
    ``...RMSNorm...``, ``...StdConv...``).

    Example:
        >>> zeroing_equals_removal(nn.Conv2d(3, 4, 3)), zeroing_equals_removal(nn.LayerNorm(4))
        (True, False)
    """
    if isinstance(module, _STATISTICS_COUPLED):
        return False
    # Weight-standardised convolutions (timm's StdConv2d, ScaledStdConv2d) normalise each filter over all of
    # its input channels: a zeroed input still counts in those statistics, a removed one does not.
    name = type(module).__name__
    return not any(k in name for k in ("LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm", "StdConv"))


@torch.no_grad()
def zero_channels(module: nn.Module, axis: str, removed: list[int]) -> Zeroed:
    """Zero the ``removed`` output channels (``axis`` "out") or features (``axis`` "features") of one layer.

    Returns what was overwritten, for :func:`restore_zeroed`. Input-side cuts (``axis`` "in") need
    nothing: the channels feeding them are zeroed where they are produced.

    Example:
        >>> m = nn.Linear(2, 3)
        >>> undo = zero_channels(m, "out", [1]); float(m.weight[1].abs().sum())
        0.0
        >>> restore_zeroed(undo); float(m.weight[1].abs().sum()) > 0
        True
    """
    weight = getattr(module, "weight", None)
    if axis == "in" or not removed or not isinstance(weight, torch.Tensor) or isinstance(module, nn.Embedding):
        return []
    dim = 1 if isinstance(module, nn.modules.conv._ConvNd) and module.transposed and axis == "out" else 0
    idx = torch.tensor(sorted(set(removed)), dtype=torch.long, device=weight.device)
    zeroed: Zeroed = [(weight, dim, idx, weight.index_select(dim, idx).clone())]
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        zeroed.append((bias, 0, idx, bias.index_select(0, idx).clone()))
    for tensor, d, i, _ in zeroed:
        tensor.index_fill_(d, i, 0.0)
    return zeroed


@torch.no_grad()
def restore_zeroed(zeroed: Zeroed) -> None:
    """Put back what :func:`zero_channels` or :func:`zero_removed_channels` overwrote.

    Example:
        >>> m = nn.Linear(2, 3); w = m.weight.clone()
        >>> restore_zeroed(zero_channels(m, "out", [0, 2])); torch.equal(m.weight, w)
        True
    """
    for tensor, dim, idx, values in reversed(zeroed):
        tensor.index_copy_(dim, idx, values)


@torch.no_grad()
def zero_removed_channels(model: nn.Module, log: list[dict[str, Any]]) -> Zeroed:
    """Zero, in an unpruned model, what a ``channel_prune`` log removes (output rows and biases, norm scales and shifts).

    Input-side cuts need nothing: the channels feeding them are zeroed where they are produced.
    Returns what was overwritten (:func:`restore_zeroed` puts it back).

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 3))
        >>> _ = zero_removed_channels(m, [{"op": "channel_prune", "module": "0", "out": [0, 2]}])
        >>> m[0].weight[1].abs().sum().item()
        0.0
    """
    zeroed: Zeroed = []
    for entry in log:
        if entry.get("op") != "channel_prune":
            continue
        m = model.get_submodule(entry["module"])
        axis = "out" if "out" in entry else "features" if "features" in entry else None
        weight = getattr(m, "weight", None)
        if axis is None or not isinstance(weight, torch.Tensor):
            continue
        size = weight.shape[1 if isinstance(m, nn.modules.conv._ConvNd) and m.transposed and axis == "out" else 0]
        zeroed += zero_channels(m, axis, sorted(set(range(size)) - set(entry[axis])))
    return zeroed


def outputs_differ(got: Any, want: Any, rtol: float = 1e-3, values: bool = True) -> str | None:
    """Why two model outputs are not the same up to float rounding (None when they are).

    Every tensor of each output counts (tuples, lists, dicts, ModelOutput). Shapes must match exactly; values (unless ``values`` is False) within ``rtol`` of the
    reference's largest magnitude.

    Example:
        >>> outputs_differ(torch.ones(2), torch.ones(2) + 1e-6) is None, outputs_differ(torch.ones(2), torch.zeros(3))
        (True, 'output shapes [(2,)] instead of [(3,)]')
    """
    a, b = traced_outputs(got), traced_outputs(want)
    if [tuple(t.shape) for t in a] != [tuple(t.shape) for t in b]:
        return f"output shapes {[tuple(t.shape) for t in a][:3]} instead of {[tuple(t.shape) for t in b][:3]}"
    if not values:
        return None
    for x, y in zip(a, b):
        if not (x.is_floating_point() and y.is_floating_point()):
            if not torch.equal(x, y):
                return "integer outputs differ"
            continue
        scale = float(y.detach().abs().max()) if y.numel() else 0.0
        diff = float((x.detach().float() - y.detach().float()).abs().max()) if x.numel() else 0.0
        if not diff <= rtol * scale + 1e-6:
            return f"outputs differ by {diff:.3g} (largest reference value {scale:.3g})"
    return None


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    if isinstance(out, dict) and out:
        return _first_tensor(next(iter(out.values())))
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"cannot find a tensor in the model output of type {type(out).__name__}")


def removal_equivalence(model: nn.Module, config: Any, example_inputs: tuple[Any, ...], **prune_kwargs: Any) -> dict[str, Any]:
    """Prune a copy of ``model`` with ``config``; zero the same channels in another copy; compare outputs.

    Returns the largest absolute and relative output difference, the pruned
    model's share of the original parameters, and the pruning report. The
    given model is not changed.

    Example:
        >>> import deepshrink as ds
        >>> r = removal_equivalence(ds.models.create("lenet5"), ds.ChannelPruning(ratio=0.3), (torch.randn(2, 1, 28, 28),))
        >>> r["max_abs_diff"] < 1e-4
        True
    """
    reference = copy.deepcopy(model).eval()
    pruned = copy.deepcopy(model).eval()
    report = prune_(pruned, config, example_inputs=example_inputs, **prune_kwargs)
    zero_removed_channels(reference, surgery_log(pruned))  # the reference is a copy: nothing to put back
    with torch.no_grad():
        want = _first_tensor(reference(*example_inputs)).float()
        got = _first_tensor(pruned.eval()(*example_inputs)).float()
    if got.shape != want.shape:
        raise AssertionError(f"pruning changed the output shape from {tuple(want.shape)} to {tuple(got.shape)}")
    diff = (got - want).abs()
    scale = want.abs().max().clamp(min=1e-12)
    n_before = sum(p.numel() for p in model.parameters())
    n_after = sum(p.numel() for p in pruned.parameters())
    return {
        "max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
        "max_rel_diff": float(diff.max() / scale) if diff.numel() else 0.0,
        "param_fraction": n_after / max(1, n_before),
        "report": report,
        "pruned": pruned,
    }


__all__ = ["outputs_differ", "removal_equivalence", "restore_zeroed", "zero_channels",
           "zero_removed_channels", "zeroing_equals_removal"]
