"""First-order Taylor channel importance, measured per sample (Molchanov et al. 2017 and 2019).

Removing a channel sets its activation ``a`` to zero; to first order the loss
of one sample changes by ``-sum(a * dL/da)`` over the channel's positions
(Molchanov et al. 2017, "Pruning Convolutional Neural Networks for Resource
Efficient Inference"). The importance is the mean over samples of the square of
that change (Molchanov et al. 2019, "Importance Estimation for Neural Network
Pruning", who place the gate right after the batch norm, as here).

Why per sample: summing the gradients over the data first and multiplying by
the weights afterwards, as a plain ``|w * grad|`` criterion does, scores a
*converged* network by the mean gradient, which is close to zero and mostly
noise: what remains after the positive and negative changes of different
samples cancel. Squaring each sample's change before averaging keeps it.

A coupled group (a residual stream written by several layers) loses a channel
in all of its producers at once; their per-sample changes are added before
squaring, which is exactly the first-order change of zeroing the channel of
the sum.

With classification data the loss is the cross-entropy on training batches;
without it, the outputs' energy on the example inputs stands in (a label-free
proxy for how much the output moves).

Example:
    >>> import torch, deepshrink as ds
    >>> m = ds.models.create("lenet300").eval()
    >>> imp = TaylorImportance.measure(m, (torch.rand(1, 784),), [((torch.rand(8, 784),), None)])
    >>> tuple(imp.contributions[m.fc1].shape), bool((imp.scores[m.fc1] >= 0).all())
    ((8, 300), True)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activation_importance import _OUT_FNS, LayerScoreImportance, _channel_dim, _out_size, activation_chains, scored_layers


def taylor_contributions(
    model: nn.Module,
    inputs: tuple[Any, ...],
    batches: Iterable[tuple[tuple[Any, ...], Tensor | None]],
    layers: list[nn.Module] | None = None,
) -> dict[nn.Module, Tensor]:
    """Per-sample first-order loss change ``sum(a * dL/da)`` of every channel of ``layers``: (N, C) each.

    ``batches`` yields ``(args, y)`` for ``model(*args)``; with ``y=None`` the loss is the outputs'
    energy (see the module docstring). ``a`` is the output of the norm that
    directly follows the layer, or of the layer itself (the same chain as the
    activation criteria). The model must be in eval mode, so that samples do
    not interact through batch statistics. Parameters' ``.grad`` are left
    untouched.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
        >>> c = taylor_contributions(m, (torch.zeros(1, 3),), [((torch.randn(5, 3),), torch.tensor([0, 1, 0, 1, 1]))])
        >>> tuple(c[m[0]].shape)
        (5, 4)
    """
    layers = list(layers) if layers is not None else scored_layers(model)
    chains = activation_chains(model, inputs, layers)
    per_batch: dict[nn.Module, Tensor] = {}
    collected: dict[nn.Module, list[Tensor]] = {layer: [] for layer in chains}
    gates: list[tuple[nn.Module, Tensor]] = []

    def make_hook(layer: nn.Module) -> Any:
        # The output is multiplied by a gate of ones, one per sample and channel (Molchanov et al. 2019):
        # dL/dgate[n, c] is then exactly sum(a * dL/da) over the positions of sample n in channel c, and
        # stays right when an in-place activation (ReLU(inplace=True)) later overwrites the product.
        def hook(_module: nn.Module, _args: Any, out: Any) -> Any:
            if not isinstance(out, Tensor) or not torch.is_floating_point(out):
                return None
            dim = _channel_dim(layer) % out.dim()
            shape = [1] * out.dim()
            shape[0], shape[dim] = out.shape[0], out.shape[dim]
            gate = torch.ones(shape, dtype=out.dtype, device=out.device, requires_grad=True)
            gates.append((layer, gate))
            return out * gate

        return hook

    handles = [hooked.register_forward_hook(make_hook(layer)) for layer, (hooked, _act) in chains.items()]
    params = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in params:
            p.requires_grad_(False)  # gradients flow to the gates only; the parameters' .grad stay as they were
        for args, y in batches:
            gates.clear()
            per_batch.clear()
            with torch.enable_grad():
                out = model(*args)
                out = out if isinstance(out, Tensor) else out[0]
                if y is not None:
                    loss = F.cross_entropy(out, y, reduction="sum")  # sum: each sample gets its own gradient
                else:
                    loss = out.float().pow(2).flatten(1).mean(1).sum()
                grads = torch.autograd.grad(loss, [g for _, g in gates], allow_unused=True)
            for (layer, gate), grad in zip(gates, grads):
                if grad is None:
                    continue
                change = grad.detach().float().reshape(gate.shape[0], -1)
                per_batch[layer] = per_batch[layer] + change if layer in per_batch else change  # a module called twice
            for layer, change in per_batch.items():
                collected[layer].append(change)
    finally:
        for h in handles:
            h.remove()
        for p, flag in params:
            p.requires_grad_(flag)
    return {layer: torch.cat(parts) for layer, parts in collected.items() if parts}


class TaylorImportance(LayerScoreImportance):
    """Mean over samples of the squared first-order loss change of removing each channel (higher = keep).

    Build it with :meth:`measure` (or :func:`~deepshrink.prune.importance.build_importance`
    with ``importance="taylor"``). ``contributions[layer]`` holds the signed
    per-sample changes (N, C); ``scores[layer]`` their mean square. For a group,
    the producers' changes are summed per sample before squaring; the group's
    scores are divided by their mean so that global ranking compares layers.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> lin = nn.Linear(2, 3)
        >>> imp = TaylorImportance({lin: torch.tensor([[1.0, -2.0, 0.0], [-1.0, 2.0, 0.0]])})
        >>> imp.scores[lin].tolist()
        [1.0, 4.0, 0.0]
    """

    def __init__(self, contributions: dict[nn.Module, Tensor]) -> None:
        super().__init__({m: c.pow(2).mean(0) for m, c in contributions.items()}, normalizer="mean")
        self.contributions = contributions

    @classmethod
    def measure(
        cls, model: nn.Module, inputs: tuple[Any, ...], batches: Iterable[tuple[tuple[Any, ...], Tensor | None]]
    ) -> TaylorImportance:
        """Measure the per-sample changes on ``batches`` of ``(args, y)`` (``y=None``: label-free proxy)."""
        return cls(taylor_contributions(model, inputs, batches))

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor | None:
        total: Tensor | None = None
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            if dep.handler not in _OUT_FNS or layer not in self.contributions:
                continue
            change = self.contributions[layer]
            if change.shape[1] != _out_size(layer):
                raise RuntimeError(
                    f"Taylor changes of a {type(layer).__name__} were measured with {change.shape[1]} channels but it now has "
                    f"{_out_size(layer)}: build the importance again (build_importance) after each pruning step"
                )
            root = group[i].root_idxs
            if any(r is None for r in root):
                continue
            part = change[:, torch.as_tensor(list(idxs), dtype=torch.long)].float()
            if total is None:
                total = torch.zeros(change.shape[0], len(group[0].root_idxs))
            total[:, torch.as_tensor(list(root), dtype=torch.long)] += part
        if total is None:
            return None
        return self._normalize(total.pow(2).mean(0), self.normalizer)


__all__ = ["TaylorImportance", "taylor_contributions"]
