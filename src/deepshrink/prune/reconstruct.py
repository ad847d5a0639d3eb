"""Least-squares reconstruction after structured pruning: refit the layers that lost inputs.

Removing FFN neurons or attention heads leaves the next layer (the FFN's output
projection, the attention's output projection, a classifier) reading fewer
inputs. Its weights can be refit so that its output on real data matches the
*unpruned* model's output of the same layer as closely as a least-squares fit
allows (Kwon et al. 2022, "A Fast Post-Training Pruning Framework for
Transformers"; He et al. 2017 for convolutions). Layers are refit from the
bottom up, each on the inputs that the already-refit pruned model produces, so
errors do not pile up. The normal equations are accumulated batch by batch
(memory independent of the amount of data) and solved with a small ridge term.

Only ``nn.Linear`` consumers are refit (inputs of any rank: tokens and batch
positions are all rows of the fit, except the padding positions of text
batches, which nothing downstream reads; see :mod:`deepshrink.data.token_rows`).

Example:
    >>> import copy, torch
    >>> from torch import nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> original = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> pruned = copy.deepcopy(original)
    >>> from deepshrink.prune.structured import replay_channel_prune
    >>> keep = list(range(0, 16, 2))
    >>> replay_channel_prune(pruned, {"op": "channel_prune", "module": "0", "out": keep})
    >>> replay_channel_prune(pruned, {"op": "channel_prune", "module": "2", "in": keep})
    >>> batches = [(torch.randn(64, 8),) for _ in range(4)]
    >>> errors = reconstruct_consumers(pruned, original, ["2"], batches)
    >>> errors["2"]["after"] < errors["2"]["before"]
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .activation_importance import calibration_batches  # the seeded draw of training batches every data pass uses
from ..data.token_rows import batch_mask, real_rows
from ..models.inputs import eval_mode


def _rows(t: Tensor, mask: Tensor | None) -> Tensor:
    return real_rows(t.detach(), mask).double()


@torch.no_grad()
def _capture(model: nn.Module, name: str, batches: Sequence[tuple[Any, ...]], want: str) -> Iterable[Tensor]:
    """Yield the input (``want="in"``) or output of submodule ``name`` for each batch."""
    module = model.get_submodule(name)
    store: list[Tensor] = []

    def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        store.append(args[0] if want == "in" else out)

    handle = module.register_forward_hook(hook)
    try:
        for batch in batches:
            store.clear()
            model(*batch)
            if store:
                yield store[0]
    finally:
        handle.remove()


@torch.no_grad()
def reconstruct_consumers(
    pruned: nn.Module,
    original: nn.Module,
    consumers: Sequence[str],
    batches: Sequence[tuple[Any, ...]],
    ridge: float = 1e-4,
    kept_outputs: dict[str, Sequence[int]] | None = None,
) -> dict[str, dict[str, float]]:
    """Refit each Linear in ``consumers`` (bottom to top) so its output matches ``original``'s on ``batches``.

    ``batches`` are argument tuples for ``model(*batch)``. A consumer that lost
    output channels too (an MLP's middle layer) lists the ones it kept in
    ``kept_outputs``: its target is the original's output on those. Returns, per layer, the
    relative squared output error before and after the refit. Both models are
    used in eval mode and left in the mode they were in.

    Example:
        >>> m = nn.Sequential(nn.Linear(3, 2))
        >>> reconstruct_consumers(m, m, [], [])
        {}
    """
    errors: dict[str, dict[str, float]] = {}
    masks = [batch_mask(tuple(b)) for b in batches]  # text batches: fit the real tokens, not the padding
    with eval_mode(pruned, original):
        for name in consumers:
            layer = pruned.get_submodule(name)
            if not isinstance(layer, nn.Linear):
                continue
            k = layer.in_features + (1 if layer.bias is not None else 0)
            device = layer.weight.device
            xtx = torch.zeros(k, k, dtype=torch.float64, device=device)
            xty = torch.zeros(k, layer.out_features, dtype=torch.float64, device=device)
            targets = list(_capture(original, name, batches, "out"))
            if kept_outputs is not None and name in kept_outputs:
                kept = torch.as_tensor(list(kept_outputs[name]), dtype=torch.long, device=device)
                targets = [t.index_select(-1, kept) for t in targets]
            err_before, energy = 0.0, 0.0
            for x, y, mask in zip(_capture(pruned, name, batches, "in"), targets, masks):
                y_rows = _rows(y, mask)
                err_before += float(((_rows(layer(x), mask) - y_rows) ** 2).sum())
                energy += float((y_rows**2).sum())
                x_rows = _rows(x, mask)
                if layer.bias is not None:
                    x_rows = torch.cat([x_rows, torch.ones(len(x_rows), 1, dtype=torch.float64, device=device)], dim=1)
                xtx += x_rows.T @ x_rows
                xty += x_rows.T @ y_rows
            if energy == 0.0:
                continue
            # Ridge scaled to the data: keeps the solve stable when inputs are nearly collinear.
            reg = ridge * float(xtx.diagonal().mean()) * torch.eye(k, dtype=torch.float64, device=device)
            solution = torch.linalg.solve(xtx + reg, xty)
            old_w = layer.weight.detach().clone()
            old_b = None if layer.bias is None else layer.bias.detach().clone()
            layer.weight.copy_(solution[: layer.in_features].T.to(layer.weight.dtype))
            if layer.bias is not None:
                layer.bias.copy_(solution[-1].to(layer.bias.dtype))
            err_after = sum(
                float(((_rows(layer(x), mask) - _rows(y, mask)) ** 2).sum())
                for x, y, mask in zip(_capture(pruned, name, batches, "in"), targets, masks)
            )
            if err_after > err_before:  # never make a layer worse than pruning left it
                layer.weight.copy_(old_w)
                if old_b is not None:
                    layer.bias.copy_(old_b)
                err_after = err_before
            errors[name] = {"before": err_before / energy, "after": err_after / energy}
    return errors


__all__ = ["calibration_batches", "reconstruct_consumers"]
