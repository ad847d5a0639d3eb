"""Rank selection: per-layer ranks for a parameter or MAC budget, from each layer's measured sensitivity.

For every candidate layer, :func:`sensitivity_curves` factors that layer
alone at several ranks (``levels`` budgets from 1/levels to (levels-1)/levels
of its cost) and measures the loss on validation data (the model's own loss,
see :class:`~deepshrink.factorize.calibrate.LossProbe`). :func:`allocate` then
starts from the unfactored model and, until the total cost meets the budget,
takes the step (one layer moving to a cheaper rank) that adds the least loss
per unit of cost saved: a greedy walk down the layers' sensitivity curves.
Layers that barely matter give up the most; sensitive layers keep high ranks
or stay whole.

Example:
    >>> curves = {
    ...     "a": [Option(None, 100, 0.0), Option(2, 50, 0.01), Option(1, 25, 0.02)],
    ...     "b": [Option(None, 100, 0.0), Option(2, 50, 0.5), Option(1, 25, 1.0)],
    ... }
    >>> allocate(curves, budget=130)
    {'a': 1, 'b': None}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..progress import StepProgress
from ..surgery import set_module
from .config import FactorizeConfig
from .method import Method, Rank, rank_at_most


@dataclass(frozen=True)
class Option:
    """One choice for a layer: a rank (None: leave the layer whole), its cost, and the loss it adds.

    Example:
        >>> Option(4, 120, 0.03).rank
        4
    """

    rank: Rank | None
    cost: float
    delta: float


def layer_cost(method: Method, module: nn.Module, rank: Rank | None, target: str, example: Tensor | None) -> float:
    """The layer's parameters or MACs at ``rank`` (None: the original layer).

    Example:
        >>> from deepshrink.factorize.svd import SVD_METHOD
        >>> layer_cost(SVD_METHOD, nn.Linear(10, 10), 2, "params", None)
        50.0
    """
    params, macs = method.cost(module, rank, example)
    if target == "macs":
        if macs is None:
            raise ConfigError("target", "macs", "'params', or example inputs / data so that MACs can be counted", "factorize")
        return float(macs)
    return float(params)


def level_ranks(method: Method, module: nn.Module, levels: int, target: str, example: Tensor | None) -> list[Rank]:
    """Distinct ranks at budgets 1/levels, 2/levels, ... (levels-1)/levels of the layer's cost.

    Example:
        >>> from deepshrink.factorize.svd import SVD_METHOD
        >>> level_ranks(SVD_METHOD, nn.Linear(100, 100), 4, "params", None)
        [12, 24, 37]
    """
    full = layer_cost(method, module, None, target, example)
    out: list[Rank] = []
    for j in range(1, levels):
        rank = rank_at_most(method, module, full * j / levels, target, example)
        if rank is not None and rank not in out:
            out.append(rank)
    return out


def sensitivity_curves(
    model: nn.Module,
    method: Method,
    layers: dict[str, nn.Module],
    config: FactorizeConfig,
    examples: dict[str, Tensor],
    probe: Callable[[nn.Module], float],
    fit: Callable[[str, nn.Module, Rank], nn.Module],
) -> dict[str, list[Option]]:
    """For each layer, its options: whole (no added loss) and factored alone at each level rank.

    ``fit(name, module, rank)`` builds the replacement; ``probe(model)`` is the loss.
    ``config.progress`` shows a bar over the (layer, rank) fits on stderr.

    Example:
        >>> import torch
        >>> from deepshrink.factorize.svd import SVD_METHOD, fit_linear
        >>> from deepshrink.factorize.calibrate import LossProbe
        >>> from deepshrink.factorize.config import SVD
        >>> m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> probe = LossProbe(m, None, (torch.randn(16, 8),), 16)
        >>> c = sensitivity_curves(m, SVD_METHOD, {"0": m[0]}, SVD(ratio=0.5, progress=False), {}, probe, lambda n, mod, r: fit_linear(mod, r))
        >>> [o.rank for o in c["0"]][:3]
        [None, 3, 2]
    """
    base = probe(model)
    curves: dict[str, list[Option]] = {}
    levels = {name: level_ranks(method, module, config.levels, config.target, examples.get(name))
              for name, module in layers.items()}
    with StepProgress(config.progress, sum(len(r) for r in levels.values()), f"{method.label} sensitivity") as bar:
        for name, module in layers.items():
            example = examples.get(name)
            options = [Option(None, layer_cost(method, module, None, config.target, example), 0.0)]
            for rank in reversed(levels[name]):
                bar.start(f"{name} rank {rank}")
                set_module(model, name, fit(name, module, rank))
                try:
                    loss = probe(model)
                finally:
                    set_module(model, name, module)
                options.append(Option(rank, layer_cost(method, module, rank, config.target, example), loss - base))
                bar.done()
            curves[name] = options
    return curves


def allocate(curves: dict[str, list[Option]], budget: float) -> dict[str, Any]:
    """Per-layer ranks (None: whole) whose total cost is at most ``budget``, greedily by added loss per cost saved.

    ``curves[name][0]`` must be the whole layer; the other options are cheaper.
    Raises ConfigError when even the cheapest options exceed the budget.

    Example:
        >>> allocate({"a": [Option(None, 10, 0.0), Option(1, 5, 0.1)]}, budget=4)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: ratio=0.4 is invalid: expected a ratio the layers can reach: the lowest ranks keep 0.5 of the cost
    """
    current = {name: 0 for name in curves}
    total = sum(opts[0].cost for opts in curves.values())
    full = total
    while total > budget:
        best: tuple[float, str, int] | None = None
        for name, opts in curves.items():
            here = opts[current[name]]
            for k, opt in enumerate(opts):
                saved = here.cost - opt.cost
                if saved <= 0:
                    continue
                score = (opt.delta - here.delta) / saved
                if best is None or score < best[0]:
                    best = (score, name, k)
        if best is None:
            lowest = sum(min(o.cost for o in opts) for opts in curves.values())
            raise ConfigError("ratio", round(budget / full, 4),
                              f"a ratio the layers can reach: the lowest ranks keep {round(lowest / full, 4)} of the cost")
        _, name, k = best
        total -= curves[name][current[name]].cost - curves[name][k].cost
        current[name] = k
    return {name: curves[name][k].rank for name, k in current.items()}


__all__ = ["Option", "allocate", "layer_cost", "level_ranks", "sensitivity_curves", "set_module"]
