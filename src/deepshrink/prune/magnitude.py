"""Unstructured pruning with an exact sparsity: ``prune_(model, MagnitudePruning(...))``.

The sparsity is exact. With ``scope="layer"`` each pruned tensor of ``n``
entries has exactly ``round(s * n)`` zeros; with ``scope="global"`` the total
over all pruned tensors is exactly ``round(s * N)``. Ties in the score are
broken by position (layer order, then flat index), so the same model and
config always give the same mask. Pruning an already pruned model only grows
the set of zeros: it never revives a weight.

Example:
    >>> import torch
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> report = ds.prune_(model, ds.MagnitudePruning(sparsity=0.9, scope="global"))
    >>> report.figures["zeros"] == round(0.9 * report.figures["numel"])
    True
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..config import Config, check_choice, check_range, check_type, register_config
from ..dispatch import Report, prune_
from ..errors import ConfigError
from .criteria import CRITERIA, Target, scores_for
from .masks import PruningMask, apply_mask, get_mask

LAYER_TYPES = ("linear", "conv", "embedding", "norm")
SCOPES = ("layer", "global")


def layer_kind(module: nn.Module) -> str | None:
    """``"linear"``, ``"conv"``, ``"embedding"``, ``"norm"`` or None for other modules.

    Example:
        >>> from torch import nn
        >>> layer_kind(nn.Conv2d(1, 1, 3)), layer_kind(nn.ReLU())
        ('conv', None)
    """
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
        return "norm"
    return None


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether a qualified module name matches any fnmatch pattern (``"fc*"``, ``"encoder.*.dense"``).

    Example:
        >>> matches("encoder.layer.0.dense", ["encoder.*.dense"]), matches("fc1", ["conv*"])
        (True, False)
    """
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@register_config("magnitude_pruning")
@dataclass(frozen=True)
class MagnitudePruning(Config):
    """Unstructured pruning of the weights of Linear, ConvNd and Embedding layers.

    Fields:
        sparsity: the fraction of zeros to reach, in [0, 1].
        scope: ``"layer"`` (each tensor reaches ``sparsity``) or ``"global"``
            (one threshold over all tensors; the total reaches ``sparsity``).
        per_layer: ``{pattern: sparsity}`` for layers that get their own exact
            sparsity (fnmatch on qualified names; the first matching pattern
            wins); with ``scope="global"`` they are left out of the global pool.
        include: only layers matching one of these patterns (empty: all).
        exclude: layers matching one of these patterns are left alone.
        criterion: ``"magnitude"``, ``"random"`` (a control) or ``"obd"``
            (Optimal Brain Damage; needs ``data=`` in the ``prune_`` call).
        layer_types: which kinds of layer to prune (``"norm"`` must be asked for).
        prune_bias: prune biases too (off by default).
        seed: seed of the random criterion.
        obd_batches: batches used to estimate the Fisher diagonal for ``"obd"``.

    Example:
        >>> cfg = MagnitudePruning(sparsity=0.9, per_layer={"fc3": 0.5})
        >>> cfg.scope
        'layer'
        >>> MagnitudePruning(sparsity=1.5)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: MagnitudePruning.sparsity=1.5 is invalid: expected a number in [0, 1]
    """

    sparsity: float = 0.5
    scope: str = "layer"
    per_layer: dict[str, float] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    criterion: str = "magnitude"
    layer_types: tuple[str, ...] = ("linear", "conv", "embedding")
    prune_bias: bool = False
    seed: int = 0
    obd_batches: int = 8

    def validate(self) -> None:
        check_range(self, "sparsity", 0, 1)
        check_choice(self, "scope", SCOPES)
        check_type(self, "per_layer", Mapping, "a mapping of layer-name pattern to sparsity in [0, 1]")
        for pattern, value in self.per_layer.items():
            if not isinstance(pattern, str) or isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(
                    "per_layer", {pattern: value}, "a mapping of layer-name pattern to sparsity in [0, 1]", "MagnitudePruning"
                )
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise ConfigError(name, value, "a list of layer-name patterns such as ['fc*', 'features.0']", "MagnitudePruning")
        check_choice(self, "criterion", CRITERIA)
        if isinstance(self.layer_types, str) or not self.layer_types or any(t not in LAYER_TYPES for t in self.layer_types):
            raise ConfigError("layer_types", self.layer_types, "a non-empty list drawn from " + ", ".join(LAYER_TYPES), "MagnitudePruning")
        check_type(self, "prune_bias", bool, "true or false")
        check_range(self, "seed", 0, 2**63 - 1, integer=True)
        check_range(self, "obd_batches", 1, None, integer=True)

    def sparsity_for(self, name: str) -> float | None:
        """The ``per_layer`` sparsity of a layer, or None when no pattern matches.

        Example:
            >>> MagnitudePruning(per_layer={"fc*": 0.3}).sparsity_for("fc1")
            0.3
        """
        for pattern, value in self.per_layer.items():
            if fnmatch.fnmatchcase(name, pattern):
                return float(value)
        return None


def select_targets(model: nn.Module, cfg: MagnitudePruning, report: Report) -> list[Target]:
    """The tensors ``cfg`` prunes, in module order; skipped layers go to ``report.skipped`` with why.

    Example:
        >>> from torch import nn
        >>> r = Report(method="magnitude")
        >>> [t[0] for t in select_targets(nn.Sequential(nn.Linear(2, 2)), MagnitudePruning(), r)]
        ['0']
    """
    targets: list[Target] = []
    seen: dict[int, str] = {}
    for qual, module in model.named_modules():
        kind = layer_kind(module)
        if kind is None or kind not in cfg.layer_types:
            continue
        if cfg.include and not matches(qual, cfg.include):
            continue
        if cfg.exclude and matches(qual, cfg.exclude):
            report.skipped[qual] = "excluded by pattern"
            continue
        names = ["weight"] + (["bias"] if cfg.prune_bias else [])
        for tensor_name in names:
            label = f"{qual}.{tensor_name}" if qual else tensor_name
            if getattr(module, tensor_name, None) is None:
                continue
            if parametrize.is_parametrized(module, tensor_name):
                others = [type(p).__name__ for p in module.parametrizations[tensor_name] if not isinstance(p, PruningMask)]  # type: ignore[index]
                if others:
                    report.skipped[label] = f"already parametrized by {', '.join(others)}; prune before sharing or quantizing"
                    continue
                key = id(module.parametrizations[tensor_name].original)  # type: ignore[index]
            else:
                key = id(getattr(module, tensor_name))
            if key in seen:  # tied weights (e.g. an embedding shared with an output layer)
                report.skipped[label] = f"tied to {seen[key]}, pruned there"
                continue
            seen[key] = label
            targets.append((qual, module, tensor_name))
    return targets


def lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` lowest entries of a 1-D tensor; ties go to the lower index.

    Example:
        >>> import torch
        >>> lowest_k(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2).tolist()
        [True, True, False, False]
    """
    n = scores.numel()
    out = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return out
    if k >= n:
        return out.fill_(True)
    threshold = torch.kthvalue(scores.cpu(), k).values.to(scores.device)
    below = scores < threshold
    out |= below
    need = k - int(below.sum())
    ties = torch.nonzero(scores == threshold).flatten()[:need]
    out[ties] = True
    return out


def _prune_group(targets: Sequence[Target], scores: Sequence[torch.Tensor], sparsity: float) -> None:
    """Prune the lowest scores of a group of tensors to exactly round(sparsity * N) zeros."""
    flat = []
    for (_, module, name), score in zip(targets, scores):
        score = score.detach().reshape(-1).float().clone()
        mask = get_mask(module, name)
        if mask is not None:  # already pruned entries are the first to go: masks only shrink
            score[~mask.reshape(-1).to(score.device)] = float("-inf")
        flat.append(score.cpu())
    joined = torch.cat(flat)
    drop = lowest_k(joined, round(sparsity * joined.numel()))
    start = 0
    for (_, module, name), score in zip(targets, flat):
        part = drop[start : start + score.numel()]
        start += score.numel()
        weight = getattr(module, name)
        apply_mask(module, name, (~part).reshape(weight.shape))


def _layer_figures(targets: Sequence[Target]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for qual, module, name in targets:
        mask = get_mask(module, name)
        numel = getattr(module, name).numel()
        zeros = int((~mask).sum()) if mask is not None else 0
        out[f"{qual}.{name}" if qual else name] = {"numel": numel, "zeros": zeros, "sparsity": zeros / numel if numel else 0.0}
    return out


@prune_.register(MagnitudePruning)
def magnitude_prune(model: nn.Module, cfg: MagnitudePruning, *, data: Any = None, loss_fn: Any = None, **_: Any) -> Report:
    """Handler of ``prune_`` for :class:`MagnitudePruning` (also random and OBD criteria).

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet300")
        >>> r = magnitude_prune(m, MagnitudePruning(sparsity=0.5))
        >>> r.per_layer["fc1.weight"]["zeros"] == round(0.5 * 784 * 300)
        True
    """
    report = Report(method=f"{cfg.criterion}_pruning")
    targets = select_targets(model, cfg, report)
    if not targets:
        report.figures.update({"sparsity": 0.0, "zeros": 0, "numel": 0})
        return report
    scores = scores_for(model, targets, cfg.criterion, seed=cfg.seed, data=data, batches=cfg.obd_batches, loss_fn=loss_fn)
    pool: list[int] = []
    for i, (qual, _, _) in enumerate(targets):
        own = cfg.sparsity_for(qual)
        if own is not None:
            _prune_group([targets[i]], [scores[i]], own)
        elif cfg.scope == "layer":
            _prune_group([targets[i]], [scores[i]], cfg.sparsity)
        else:
            pool.append(i)
    if pool:
        _prune_group([targets[i] for i in pool], [scores[i] for i in pool], cfg.sparsity)
    report.per_layer = _layer_figures(targets)
    report.changed = list(report.per_layer)
    numel = sum(v["numel"] for v in report.per_layer.values())
    zeros = sum(v["zeros"] for v in report.per_layer.values())
    report.figures.update(
        {"sparsity": zeros / numel, "zeros": zeros, "numel": numel, "scope": cfg.scope, "criterion": cfg.criterion}
    )
    return report
