"""Optimal Brain Surgeon channel selection for layers whose outputs a Linear reads (ZipLM-style).

When the layer that reads a pruned layer's channels is refit afterwards by least
squares (``ChannelPruning(reconstruct=True)``, :mod:`.reconstruct`), the right
question is not "which channel is small" but "which channels can the refit do
without". For a consumer ``y = x W`` with input Gram matrix ``G = E[x x^T]``
measured on data, removing the inputs ``S`` and re-solving the others changes
the output by exactly ``tr(W_S^T [G^-1]_SS^-1 W_S)`` (Hassibi and Stork's
Optimal Brain Surgeon, applied to whole input columns as in Kurtic et al. 2023,
"ZipLM", and Frantar and Alistarh 2022, "Optimal Brain Compression"). This
module removes a group's channels greedily, lowest cost first, updating the
remaining weights and the inverse Gram matrix after each removal, so that every
choice accounts for the compensation the refit will make. A unit is one channel
(an FFN neuron, a hidden unit of an MLP) or one attention head (its ``head_dim``
columns of the output projection together).

A channel's score is the consumer's relative output error (the cost summed up
to its removal, divided by the output energy): the greedy order inside a
layer, and comparable across layers for ``scope="global"``.

Consumers must be ``nn.Linear`` (transformer FFNs and attention heads, MLPs,
the classifier after a flattened convolution); a channel read by a convolution
raises ConfigError, since the refit that gives the criterion its meaning refits
Linear layers only.

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> imp = OBSImportance.measure(model, [(torch.randn(64, 6),)])
    >>> import torch_pruning as tp
    >>> dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 6))
    >>> group = dg.get_pruning_group(model[0], tp.prune_linear_out_channels, idxs=[0, 1, 2, 3])
    >>> scores = imp(group)
    >>> len(scores), bool((scores >= 0).all())
    (4, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from ..errors import ConfigError

# Damping added to the Gram diagonal, as a fraction of its mean (the "percdamp" of OBC/GPTQ):
# dead or collinear inputs would otherwise make the inverse blow up.
DAMPING = 0.01
# Channels removed per greedy step: at most 1/STEPS of a group's units at once, so a wide layer
# (1536 FFN neurons) needs ~STEPS updates of its inverse Gram matrix rather than one per neuron.
STEPS = 128
_IN_FNS = (tp.prune_linear_in_channels, tp.prune_conv_in_channels)


@torch.no_grad()
def input_grams(model: nn.Module, batches: Iterable[tuple[Any, ...]], layers: Sequence[nn.Linear] | None = None) -> dict[nn.Module, Tensor]:
    """``E[x x^T]`` (float64) of the input rows of every Linear in ``model`` (or of ``layers``) over ``batches``.

    Text batches ``(input_ids, attention_mask)`` count their real tokens only.

    Example:
        >>> m = nn.Sequential(nn.Linear(3, 2))
        >>> g = input_grams(m, [(torch.eye(3),)])
        >>> g[m[0]].tolist() == (torch.eye(3, dtype=torch.float64) / 3).tolist()
        True
    """
    # The one input-covariance pass of the toolkit (real tokens only, float64 sums): the one the
    # activation-aware SVD whitens with.
    from ..factorize.calibrate import collect

    wanted = set(layers) if layers is not None else None
    names = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and (wanted is None or m in wanted)}
    found = collect(model, list(names), [], list(batches), 0)
    grams = {names[n]: d.covariance for n, d in found.items() if d.covariance is not None}
    if not grams:
        raise ValueError("no calibration batches reached a Linear layer: pass data with at least one training item")
    return grams


def obs_elimination(grams: Sequence[Tensor], weights: Sequence[Tensor], columns: Sequence[Tensor], steps: int = STEPS) -> Tensor:
    """Greedy OBS removal of units; returns each unit's relative output error at its removal (the last unit: +inf).

    ``grams[c]`` is consumer ``c``'s input Gram (n_c x n_c), ``weights[c]`` its
    weight as (n_c x out_c) (``y = x W``), ``columns[c]`` an integer tensor (units x s_c)
    of the input columns each unit owns in consumer ``c``. Units are removed
    lowest cost first (a few per step for wide layers), and after each step the
    remaining weights take the least-squares compensation and the inverse Gram
    its rank-s downdate, so later costs are exact for the refit model.

    Example:
        >>> g = torch.eye(3, dtype=torch.float64)
        >>> w = torch.tensor([[3.0], [1.0], [2.0]], dtype=torch.float64)
        >>> [round(v, 4) for v in obs_elimination([g], [w], [torch.arange(3).view(3, 1)]).tolist()]
        [inf, 0.0721, 0.3607]
    """
    units = columns[0].shape[0]
    if any(c.shape[0] != units for c in columns):
        raise ValueError("every consumer must give columns for every unit")
    hinvs, ws, energy = [], [], 0.0
    for g, w in zip(grams, weights):
        g = g.double()
        damp = DAMPING * float(g.diagonal().mean().clamp(min=1e-12))
        hinvs.append(torch.linalg.inv(g + damp * torch.eye(g.shape[0], dtype=g.dtype)))
        ws.append(w.double().clone())
        energy += float((w.double() * (g @ w.double())).sum())
    energy = max(energy, 1e-12)
    score = torch.full((units,), math.inf, dtype=torch.float64)
    alive = torch.ones(units, dtype=torch.bool)
    per_step = max(1, units // steps)
    total = 0.0
    while int(alive.sum()) > 1:
        idx = alive.nonzero().flatten()
        cost = torch.zeros(len(idx), dtype=torch.float64)
        for hinv, w, cols in zip(hinvs, ws, columns):
            c = cols[idx]  # (u, s)
            if c.shape[1] == 1:  # single columns: ||w_j||^2 / [G^-1]_jj, no batched solve needed
                j = c[:, 0]
                cost += (w[j] ** 2).sum(dim=1) / hinv[j, j]
                continue
            h_ss = hinv[c.unsqueeze(-1), c.unsqueeze(-2)]  # (u, s, s)
            w_s = w[c]  # (u, s, out)
            cost += (w_s * torch.linalg.solve(h_ss, w_s)).sum(dim=(1, 2))
        take = min(per_step, len(idx) - 1)
        order = torch.argsort(cost)[:take]
        chosen = idx[order]
        for j, u in zip(order.tolist(), chosen.tolist()):
            score[u] = (total + float(cost[j])) / energy
        total += float(cost[order].sum())
        alive[chosen] = False
        for hinv, w, cols in zip(hinvs, ws, columns):
            s = cols[chosen].flatten()
            inv_ss = torch.linalg.inv(hinv[s][:, s])
            w -= hinv[:, s] @ (inv_ss @ w[s])
            hinv -= hinv[:, s] @ inv_ss @ hinv[s, :]
            w[s] = 0.0
    return score


class OBSImportance(tp.importance.Importance):
    """Channels scored by the output error a least-squares refit is left with when they go (see the module docstring).

    Build it with :meth:`measure` (one pass over calibration batches for the
    consumers' input Gram matrices). ``head_dims`` maps attention projections
    to their head width, so that a head's channels are removed together.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> imp = OBSImportance.measure(m, [(torch.randn(32, 4),)])
        >>> sorted(len(g) for g in imp.grams.values())
        [4, 8]
    """

    def __init__(self, grams: dict[nn.Module, Tensor], head_dims: dict[nn.Module, int] | None = None) -> None:
        self.grams = grams
        self.head_dims = dict(head_dims or {})

    @classmethod
    def measure(
        cls, model: nn.Module, batches: Iterable[tuple[Any, ...]], head_dims: dict[nn.Module, int] | None = None
    ) -> OBSImportance:
        """Input Gram matrices of every Linear of ``model`` on ``batches``.

        Example:
            >>> imp = OBSImportance.measure(nn.Sequential(nn.Linear(2, 2)), [(torch.randn(4, 2),)])
            >>> len(imp.grams)
            1
        """
        was_training = model.training
        model.eval()
        try:
            return cls(input_grams(model, batches), head_dims)
        finally:
            model.train(was_training)

    def _unit_size(self, group: Any) -> int:
        # A group that cuts an attention projection's output channels cuts whole heads (the root
        # may be any member, e.g. the output projection's input channels).
        for dep, _ in group:
            if dep.target.module in self.head_dims and dep.handler == tp.prune_linear_out_channels:
                return self.head_dims[dep.target.module]
        return 1

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor | None:
        n_root = len(group[0][1])
        size = self._unit_size(group)
        if size < 1 or n_root % size:
            size = 1
        units = n_root // size
        grams, weights, columns = [], [], []
        for i, (dep, idxs) in enumerate(group):
            if dep.handler not in _IN_FNS:
                continue
            layer = dep.target.module
            if not isinstance(layer, nn.Linear):
                raise ConfigError(
                    "importance", "obs",
                    f"a criterion for channels read by Linear layers (transformer FFNs and heads, MLPs); a {type(layer).__name__} "
                    "reads this group's channels. Use 'l1', 'taylor' or 'mean_activation' for convolutional layers, or list "
                    "them in ignored=",
                    "ChannelPruning",
                )
            if layer not in self.grams:
                raise RuntimeError(
                    f"no input statistics for a Linear({layer.in_features}, {layer.out_features}): it was created or "
                    "resized after the measurement; build the importance again (build_importance) after each pruning step"
                )
            gram = self.grams[layer]
            if gram.shape[0] != layer.in_features:
                raise RuntimeError(
                    f"input statistics of a Linear were measured with {gram.shape[0]} inputs but it now has "
                    f"{layer.in_features}: build the importance again (build_importance) after each pruning step"
                )
            local = torch.as_tensor(list(idxs), dtype=torch.long)
            root = torch.as_tensor(list(group[i].root_idxs), dtype=torch.long)
            # A root channel may own several input columns (a flattened conv channel): group them per unit.
            unit_of = root // size
            order = torch.argsort(unit_of * (local.max() + 1) + local)
            per_unit = torch.bincount(unit_of, minlength=units)
            if per_unit.min() != per_unit.max() or per_unit.min() == 0:
                continue  # a consumer that reads only part of the group (a split); the others decide
            columns.append(local[order].view(units, -1))
            grams.append(gram)
            weights.append(layer.weight.detach().T)
        if not grams:
            return None
        unit_scores = obs_elimination(grams, weights, columns)
        finite = unit_scores[torch.isfinite(unit_scores)]
        top = float(finite.max()) * 2 + 1.0 if finite.numel() else 1.0
        unit_scores = torch.where(torch.isfinite(unit_scores), unit_scores, torch.full_like(unit_scores, top))
        return unit_scores.repeat_interleave(size).float()


__all__ = ["DAMPING", "OBSImportance", "STEPS", "input_grams", "obs_elimination"]
