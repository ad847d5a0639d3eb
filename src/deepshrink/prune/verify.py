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


@torch.no_grad()
def zero_removed_channels(model: nn.Module, log: list[dict[str, Any]]) -> None:
    """Zero, in an unpruned model, what a ``channel_prune`` log removes (output rows and biases, norm scales and shifts).

    Input-side cuts need nothing: the channels feeding them are zeroed where they are produced.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 3))
        >>> zero_removed_channels(m, [{"op": "channel_prune", "module": "0", "out": [0, 2]}])
        >>> m[0].weight[1].abs().sum().item()
        0.0
    """
    for entry in log:
        if entry.get("op") != "channel_prune":
            continue
        m = model.get_submodule(entry["module"])
        axis = "out" if "out" in entry else "features" if "features" in entry else None
        if axis is None or isinstance(m, nn.Embedding):
            continue
        weight = getattr(m, "weight", None)
        if weight is None:
            continue
        dim = 1 if isinstance(m, nn.modules.conv._ConvNd) and m.transposed and axis == "out" else 0
        removed = sorted(set(range(weight.shape[dim])) - set(entry[axis]))
        weight.index_fill_(dim, torch.tensor(removed, dtype=torch.long), 0.0)
        if getattr(m, "bias", None) is not None:
            m.bias[removed] = 0


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
    zero_removed_channels(reference, surgery_log(pruned))
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


__all__ = ["removal_equivalence", "zero_removed_channels"]
