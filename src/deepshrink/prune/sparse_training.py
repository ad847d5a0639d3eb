"""Sparse training from scratch: sparse momentum (Dettmers & Zettlemoyer 2019), SET and RigL.

The network starts sparse at a target density and stays exactly at that
density while its connections move: at the end of every epoch (or every
``every_steps`` optimizer steps) each layer drops a decaying fraction of its
smallest-magnitude active weights, and the same number of connections grows
back. The three methods differ in where the new connections go:

- **sparse momentum**: layers get regrowth in proportion to the mean
  magnitude of the momentum of their active weights; inside a layer the
  missing weights with the largest momentum magnitude grow back;
- **SET** (Mocanu et al. 2018): each layer regrows what it lost, at random;
- **RigL** (Evci et al. 2020): each layer regrows what it lost, where the
  dense gradient of the last step is largest.

Grown weights start at exactly zero. Masks are the :class:`PruningMask`
parametrization of pruning, moved with :func:`~deepshrink.prune.masks.set_mask`
(pruning's own :func:`apply_mask` still only shrinks).

The momentum of *missing* weights must be known, but a masked weight's stored
original gets no gradient. So the callback hooks the output of each mask (the
effective weight) and keeps its own exponential average of the dense gradient
``m = beta * m + g`` (the SGD momentum of an unmasked weight).

Distributed runs: each process sees the gradient of its own share of the
batch, and the momentum is linear in the gradients, so the processes average
their momentum (one all-reduce per update, not per step) and then hold the
momentum of the global batch. Weights are equal on every process (DDP), ties
are broken by position, random regrowth draws from a generator seeded by
``seed`` and the update count, so every process computes the same masks; as a
guarantee the masks of process 0 are broadcast after each update.

Example:
    >>> import deepshrink as ds
    >>> data = ds.data.load("synthetic:classification:128")
    >>> model = ds.models.create("lenet300", in_features=64, num_classes=4)
    >>> cb = ds.SparseMomentum(density=0.2)
    >>> _ = ds.train(model, data, ds.TrainConfig(epochs=2, progress=False), [cb])
    >>> round(1 - ds.prune.sparsity(model), 6)
    0.2
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..config import Config, check_choice, check_range, check_type, register_config
from ..dispatch import Report
from ..errors import ConfigError
from ..train.callbacks import Callback, TrainState
from .criteria import Target
from .magnitude import LAYER_TYPES, MagnitudePruning, lowest_k, select_targets
from .masks import get_mask, set_mask

REGROWTH = ("momentum", "random", "gradient")
REDISTRIBUTION = ("momentum", "none")
DISTRIBUTIONS = ("uniform", "erdos_renyi")
DECAYS = ("cosine", "linear", "constant")


@register_config("sparse_training")
@dataclass(frozen=True)
class SparseTrainingConfig(Config):
    """Settings of sparse training (sparse momentum, SET, RigL).

    Fields:
        density: fraction of weights kept, over all sparse layers together, in (0, 1].
        regrowth: where connections grow back: ``"momentum"``, ``"random"`` or ``"gradient"``.
        redistribution: ``"momentum"`` (layers get regrowth in proportion to their mean
            momentum magnitude) or ``"none"`` (each layer regrows what it dropped).
        prune_rate: fraction of each layer's active weights dropped at the first update.
        decay: how the drop fraction falls over training: ``"cosine"``, ``"linear"``, ``"constant"``.
        distribution: initial density per layer: ``"uniform"`` (the same in every layer) or
            ``"erdos_renyi"`` (proportional to (fan_in + fan_out + kernel) / numel, capped at 1).
        momentum: coefficient of the dense-gradient momentum the callback keeps.
        every_steps: update every N optimizer steps; 0 updates at the end of each epoch.
        include, exclude, layer_types: which layers are sparse (as in MagnitudePruning).
        seed: seed of the initial masks and of random regrowth.

    Example:
        >>> SparseTrainingConfig(density=0.1, regrowth="random").redistribution
        'momentum'
        >>> SparseTrainingConfig(density=0)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: SparseTrainingConfig.density=0 is invalid: expected a number in (0, 1]
    """

    density: float = 0.2
    regrowth: str = "momentum"
    redistribution: str = "momentum"
    prune_rate: float = 0.5
    decay: str = "cosine"
    distribution: str = "uniform"
    momentum: float = 0.9
    every_steps: int = 0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    layer_types: tuple[str, ...] = ("linear", "conv")
    seed: int = 0

    def validate(self) -> None:
        check_range(self, "density", 0, 1, lo_open=True)
        check_choice(self, "regrowth", REGROWTH)
        check_choice(self, "redistribution", REDISTRIBUTION)
        check_range(self, "prune_rate", 0, 1, hi_open=True)
        check_choice(self, "decay", DECAYS)
        check_choice(self, "distribution", DISTRIBUTIONS)
        check_range(self, "momentum", 0, 1, hi_open=True)
        check_range(self, "every_steps", 0, None, integer=True)
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise ConfigError(name, value, "a list of layer-name patterns such as ['fc*', 'features.0']", "SparseTrainingConfig")
        if isinstance(self.layer_types, str) or not self.layer_types or any(t not in LAYER_TYPES for t in self.layer_types):
            raise ConfigError("layer_types", self.layer_types, "a non-empty list drawn from " + ", ".join(LAYER_TYPES),
                              "SparseTrainingConfig")
        check_type(self, "seed", int, "an integer >= 0")
        check_range(self, "seed", 0, 2**63 - 1, integer=True)

    def rate_at(self, progress: float) -> float:
        """The drop fraction when a fraction ``progress`` of training is done.

        Example:
            >>> cfg = SparseTrainingConfig(prune_rate=0.5)
            >>> cfg.rate_at(0.0), cfg.rate_at(0.5), cfg.rate_at(1.0)
            (0.5, 0.25, 0.0)
        """
        t = min(max(progress, 0.0), 1.0)
        if self.decay == "constant":
            return self.prune_rate
        if self.decay == "linear":
            return self.prune_rate * (1.0 - t)
        return self.prune_rate * 0.5 * (1.0 + math.cos(math.pi * t))


def allocate(total: int, weights: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights``, no share above its cap.

    Largest remainders, ties to the earlier entry; what a capped entry cannot
    take goes to the others. The shares always sum to ``min(total, sum(caps))``.

    Example:
        >>> allocate(10, [1.0, 1.0, 2.0], [10, 1, 10])
        [3, 1, 6]
    """
    shares = [0] * len(caps)
    left = min(total, sum(caps))
    open_ = [i for i, c in enumerate(caps) if c > 0]
    while left > 0 and open_:
        w = [max(float(weights[i]), 0.0) for i in open_]
        if sum(w) <= 0 or not all(math.isfinite(x) for x in w):
            w = [float(caps[i] - shares[i]) for i in open_]  # no signal: in proportion to free room
        wsum = sum(w)
        ideal = [left * x / wsum for x in w]
        base = [int(math.floor(v)) for v in ideal]
        rest = left - sum(base)
        order = sorted(range(len(open_)), key=lambda j: (-(ideal[j] - base[j]), j))
        for j in order[:rest]:
            base[j] += 1
        for j, i in enumerate(open_):
            take = min(base[j], caps[i] - shares[i])
            shares[i] += take
            left -= take
        open_ = [i for i in open_ if shares[i] < caps[i]]
    return shares


def _fan_score(weight: torch.Tensor) -> float:
    # Erdos-Renyi(-Kernel): (sum of the dimensions) / (product of the dimensions).
    dims = [int(d) for d in weight.shape]
    return sum(dims) / max(1, math.prod(dims))


def initial_counts(numels: Sequence[int], density: float, distribution: str, scores: Sequence[float]) -> list[int]:
    """Active weights per layer at the start: exactly ``round(density * total)`` in all.

    Example:
        >>> initial_counts([100, 300], 0.5, "uniform", [0.0, 0.0])
        [50, 150]
    """
    total = round(density * sum(numels))
    weights = [float(n) for n in numels] if distribution == "uniform" else [s * n for s, n in zip(scores, numels)]
    return allocate(total, weights, list(numels))


class SparseMomentum(Callback):
    """Sparse training callback; this class defaults to sparse momentum (momentum regrowth and redistribution).

    ``SparseMomentum(density=0.2, prune_rate=0.5, ...)`` takes any field of
    :class:`SparseTrainingConfig`, or ``config=`` a whole config. The model
    becomes sparse at ``on_train_begin``; the masks move at each update; the
    overall number of active weights never changes. ``updates`` records each
    update (drop fraction, connections moved, per-layer densities).

    Example:
        >>> import deepshrink as ds
        >>> from deepshrink.train.callbacks import TrainState
        >>> model = ds.models.create("lenet300")
        >>> cb = SparseMomentum(density=0.1)
        >>> cb.on_train_begin(TrainState(model=model))
        >>> round(1 - ds.prune.sparsity(model), 6)
        0.1
    """

    defaults: dict[str, str] = {"regrowth": "momentum", "redistribution": "momentum"}

    def __init__(self, density: float | None = None, *, config: SparseTrainingConfig | None = None, **fields: Any) -> None:
        if config is not None:
            if density is not None or fields:
                raise ConfigError("config", "config plus fields", f"either config= or fields of SparseTrainingConfig, not both",
                                  type(self).__name__)
            if not isinstance(config, SparseTrainingConfig):
                raise ConfigError("config", type(config).__name__, "a SparseTrainingConfig", type(self).__name__)
            self.config = config
        else:
            known = set(SparseTrainingConfig.__dataclass_fields__)
            unknown = sorted(set(fields) - known)
            if unknown:
                raise ConfigError(unknown[0], fields[unknown[0]], "a field of SparseTrainingConfig: " + ", ".join(sorted(known)),
                                  type(self).__name__)
            merged = {**self.defaults, **fields}
            if density is not None:
                merged["density"] = density
            for key in ("include", "exclude", "layer_types"):
                if key in merged and isinstance(merged[key], list):
                    merged[key] = tuple(merged[key])
            self.config = SparseTrainingConfig(**merged)
        self.initialized = False
        self.updates: list[dict[str, Any]] = []
        self._targets: list[Target] = []
        self._momentum: list[torch.Tensor] = []
        self._last_grad: list[torch.Tensor] = []
        self._pending: list[torch.Tensor | None] = []
        self._handles: list[Any] = []

    # ------------------------------------------------------------------ set-up

    def _select(self, model: nn.Module) -> list[Target]:
        cfg = self.config
        selector = MagnitudePruning(include=cfg.include, exclude=cfg.exclude, layer_types=cfg.layer_types)
        targets = select_targets(model, selector, Report(method="sparse_training"))
        if not targets:
            raise ConfigError("include", cfg.include, "patterns that select at least one layer to train sparse",
                              type(self).__name__)
        return targets

    def _init_masks(self, model: nn.Module) -> None:
        cfg = self.config
        weights = [getattr(m, n) for _, m, n in self._targets]
        counts = initial_counts([w.numel() for w in weights], cfg.density, cfg.distribution, [_fan_score(w) for w in weights])
        gen = torch.Generator().manual_seed(cfg.seed)
        for (_, module, name), weight, k in zip(self._targets, weights, counts):
            order = torch.randperm(weight.numel(), generator=gen)
            keep = torch.zeros(weight.numel(), dtype=torch.bool)
            keep[order[:k]] = True
            set_mask(module, name, keep.reshape(weight.shape))

    def _hook(self, index: int) -> Any:
        def forward_hook(_: nn.Module, __: Any, out: torch.Tensor) -> None:
            if out.requires_grad:
                out.register_hook(lambda g: self._collect(index, g))

        return forward_hook

    def _collect(self, index: int, grad: torch.Tensor) -> None:
        pending = self._pending[index]
        self._pending[index] = grad.detach().clone() if pending is None else pending + grad.detach()

    def prepare(self, model: nn.Module) -> None:
        """Make ``model`` sparse now (random masks at the target density); idempotent.

        ``on_train_begin`` does it when needed. Under torchrun call it before
        ``deepshrink.train``: DistributedDataParallel wraps the model before callbacks
        run and must see the masked parameters.

        Example:
            >>> import deepshrink as ds
            >>> m = ds.models.create("lenet300"); SparseMomentum(density=0.5).prepare(m)
            >>> ds.prune.sparsity(m)
            0.5
        """
        self._targets = self._select(model)
        if not self.initialized:
            self._init_masks(model)
            self.initialized = True

    def on_train_begin(self, state: TrainState) -> None:
        model = state.model
        self._targets = self._select(model)
        fresh = any(get_mask(m, n) is None for _, m, n in self._targets)
        if fresh and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ConfigError("prepare", "not called", "callback.prepare(model) before deepshrink.train under torchrun "
                              "(DistributedDataParallel must wrap the masked model)", type(self).__name__)
        if not self.initialized:  # a resumed run loads its masks from the checkpoint afterwards
            self.prepare(model)
        if fresh and state.optimizer is not None:
            # The masks moved each weight into its parametrization, which changes the order of
            # model.parameters(); a resumed run builds its optimizer in that new order, so list the
            # parameters in it here too, and the saved optimizer state lines up on resume.
            order = {id(p): i for i, p in enumerate(model.parameters())}
            for group in state.optimizer.param_groups:
                group["params"].sort(key=lambda p: order.get(id(p), len(order)))
        self.remove_hooks()
        params = [m.parametrizations[n] for _, m, n in self._targets]  # type: ignore[index]
        self._handles = [p.register_forward_hook(self._hook(i)) for i, p in enumerate(params)]
        weights = [getattr(m, n) for _, m, n in self._targets]
        if len(self._momentum) != len(weights):
            self._momentum = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
            self._last_grad = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
        self._pending = [None] * len(weights)

    def remove_hooks(self) -> None:
        """Detach the gradient hooks (done at the end of training)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def on_train_end(self, state: TrainState) -> None:
        self.remove_hooks()

    # ------------------------------------------------------------------ per step

    def on_before_step(self, state: TrainState) -> None:
        beta = self.config.momentum
        for i, pending in enumerate(self._pending):
            if pending is None:
                continue
            g = pending.float()
            self._momentum[i].mul_(beta).add_(g)
            self._last_grad[i].copy_(g)
            self._pending[i] = None

    def on_step_end(self, state: TrainState) -> None:
        every = self.config.every_steps
        if every and state.step % every == 0 and state.step < state.total_steps:
            self.update(state.model, state.optimizer, state.step / max(1, state.total_steps))

    def on_epoch_end(self, state: TrainState) -> None:
        if self.config.every_steps == 0 and state.epoch < state.total_epochs and state.step < state.total_steps:
            progress = state.step / state.total_steps if state.total_steps else state.epoch / max(1, state.total_epochs)
            self.update(state.model, state.optimizer, progress)

    # ------------------------------------------------------------------ the update

    def _synchronise(self) -> None:
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        world = dist.get_world_size()
        for t in (*self._momentum, *self._last_grad):
            dist.all_reduce(t)
            t.div_(world)

    def _broadcast_masks(self) -> None:
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        for _, module, name in self._targets:
            mask = get_mask(module, name)
            assert mask is not None
            as_int = mask.to(torch.uint8)
            dist.broadcast(as_int, src=0)
            set_mask(module, name, as_int.bool())

    def _growth_scores(self, i: int, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
        if self.config.regrowth == "momentum":
            return self._momentum[i].abs().reshape(-1).cpu()
        if self.config.regrowth == "gradient":
            return self._last_grad[i].abs().reshape(-1).cpu()
        return torch.rand(math.prod(shape), generator=gen)

    @torch.no_grad()
    def update(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, progress: float) -> dict[str, Any]:
        """Drop and regrow once; ``progress`` in [0, 1] sets the drop fraction. Returns what moved.

        Example:
            >>> import deepshrink as ds
            >>> from deepshrink.train.callbacks import TrainState
            >>> m = ds.models.create("lenet300")
            >>> cb = SparseMomentum(density=0.3, regrowth="random", redistribution="none")
            >>> cb.on_train_begin(TrainState(model=m))
            >>> cb.update(m, None, 0.0)["moved"] > 0, round(1 - ds.prune.sparsity(m), 6)
            (True, 0.3)
        """
        if not self._targets:
            self._targets = self._select(model)
        self._synchronise()
        cfg = self.config
        rate = cfg.rate_at(progress)
        masks, flat_w, dropped, caps, signal = [], [], [], [], []
        for i, (_, module, name) in enumerate(self._targets):
            mask = get_mask(module, name)
            if mask is None:
                raise ConfigError("model", type(model).__name__, "a model made sparse by this callback's on_train_begin",
                                  type(self).__name__)
            active = mask.reshape(-1).cpu()
            w = getattr(module, name).detach().reshape(-1).float().cpu()
            n_active = int(active.sum())
            signal.append(float(self._momentum[i].reshape(-1).cpu()[active].abs().mean()) if n_active else 0.0)
            score = torch.where(active, w.abs(), torch.full_like(w, math.inf))
            drop = lowest_k(score, round(rate * n_active)) & active
            masks.append(active)
            flat_w.append(w)
            dropped.append(drop)
            caps.append(active.numel() - (n_active - int(drop.sum())))
        removed = [int(d.sum()) for d in dropped]
        if cfg.redistribution == "none":
            grow = removed
        else:
            grow = allocate(sum(removed), signal, caps)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + len(self.updates) + 1)
        densities: dict[str, float] = {}
        moved = 0
        for i, (qual, module, name) in enumerate(self._targets):
            kept = masks[i] & ~dropped[i]
            scores = self._growth_scores(i, getattr(module, name).shape, gen)
            # the highest scores among the missing weights; ties go to the lower index
            candidates = torch.where(kept, torch.full_like(scores, math.inf), -scores)
            grown = lowest_k(candidates, grow[i]) & ~kept
            new = kept | grown
            changed = new != masks[i]
            moved += int((grown & ~masks[i]).sum())
            weight = getattr(module, name)
            set_mask(module, name, new.reshape(weight.shape))
            _reset_optimizer_state(optimizer, module.parametrizations[name].original, changed.reshape(weight.shape))  # type: ignore[index]
            densities[f"{qual}.{name}" if qual else name] = float(new.float().mean())
        self._broadcast_masks()
        record = {"rate": rate, "removed": sum(removed), "moved": moved, "density": densities}
        self.updates.append(record)
        return record

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        return {"initialized": self.initialized, "updates": self.updates, "momentum": list(self._momentum),
                "last_grad": list(self._last_grad)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initialized = bool(state["initialized"])
        self.updates = list(state["updates"])
        self._momentum = [t.clone() for t in state["momentum"]]
        self._last_grad = [t.clone() for t in state["last_grad"]]
        if self._targets:
            for i, (_, module, name) in enumerate(self._targets):
                device = getattr(module, name).device
                self._momentum[i] = self._momentum[i].to(device)
                self._last_grad[i] = self._last_grad[i].to(device)


def _reset_optimizer_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, changed: torch.Tensor) -> None:
    # A dropped weight's momentum (or Adam moments) must not drag it back to life, and a
    # grown weight starts from rest: zero every per-element optimizer state where the mask changed.
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.masked_fill_(changed.to(value.device), 0)


class SET(SparseMomentum):
    """Sparse Evolutionary Training (Mocanu et al. 2018): random regrowth, no redistribution.

    Example:
        >>> SET(density=0.1).config.regrowth
        'random'
    """

    defaults = {"regrowth": "random", "redistribution": "none"}


class RigL(SparseMomentum):
    """Rigging the Lottery (Evci et al. 2020): regrowth where the dense gradient is largest.

    Example:
        >>> RigL(density=0.1, every_steps=100).config.regrowth
        'gradient'
    """

    defaults = {"regrowth": "gradient", "redistribution": "none"}
