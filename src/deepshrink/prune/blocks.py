"""Depth pruning: remove whole residual blocks (transformer layers, ResNet blocks) physically.

``prune_(model, BlockPruning(count=3), data=...)`` deletes blocks from the
stacks they live in (``encoder.layer`` of a BERT, ``layer3`` of a ResNet), so
the model runs fewer layers. On a CPU at batch 1 a transformer's time goes
mostly to per-layer work that does not shrink with width: all-MiniLM-L6-v2 with
half its FFN neurons and a third of its heads removed runs 1.5x faster, with
three of its six layers removed 2x (BENCHMARKS.md, ``minilm-recipes``). Removing
a block removes all of its attention heads and FFN neurons at once, together
with the layer norms and the per-layer overhead that width pruning leaves behind.

A *block* is a composite module (it has submodules and parameters) in an
``nn.ModuleList`` or ``nn.Sequential`` next to at least one sibling of the same
class, called once per forward, whose output has the shape of its input (so
that the next block can take the input instead: a residual block, not a
downsampling one). Usually that is a residual block; one without a skip connection
(SqueezeNet's Fire) qualifies too, and the loss criterion measures what removing it
costs. A plain ``nn.Sequential`` chain (Conv-BN-ReLU) is never a block. At least one
block of every stack stays.

Which blocks go:

- ``importance="loss"`` (default): the set of blocks whose removal raises the
  model's loss on the validation split least (cross-entropy for
  classification, one minus the cosine of sentence embeddings to the
  original's for text, the output's relative error otherwise): every set
  measured when there are few (``search="auto"``: at most 64), else greedily,
  one block at a time, measuring again after each removal.
- ``importance="influence"``: one pass on training data; a block whose
  output is closest (cosine) to its input changes least and goes first
  (ShortGPT's block influence, Men et al. 2024). Cheaper, no validation split needed.

With ``bridge=True`` each run of consecutive removed blocks is replaced by one
linear map fitted by least squares from the run's input to its output
(:mod:`.bridges`; ReplaceMe), and the loss search measures each set with its
bridges in place.

Every removal is recorded in the surgery log (``{"op": "remove_blocks",
"container": "encoder.layer", "removed": [1, 2]}``), so a saved model rebuilds
from its base factory; layer counts in a Hugging Face config and the
``layer_idx`` of the blocks that stay are renumbered.

Example:
    >>> import torch, deepshrink as ds
    >>> from torch import nn
    >>> class Block(nn.Module):
    ...     def __init__(self): super().__init__(); self.fc = nn.Linear(8, 8)
    ...     def forward(self, x): return x + self.fc(x)
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(*[Block() for _ in range(4)]), nn.Linear(8, 2))
    >>> report = ds.prune_(model, ds.BlockPruning(count=2), example_inputs=(torch.randn(16, 4),))
    >>> len(model[1]), report.figures["blocks_removed"]
    (2, 2)
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, check_choice, check_range, check_type, register_config
from ..dispatch import Report, prune_
from ..errors import ConfigError, UnsupportedModelError
from ..models.inputs import forward_error
from ..surgery import record_surgery, register_surgery
from .bridges import LinearBridge, Run, fit_bridges, insert_into_stack, merge_bridges, runs_of
from .cost import measure_cost

BLOCK_IMPORTANCES = ("loss", "influence")
BLOCK_SEARCHES = ("auto", "exhaustive", "greedy")
# "auto" tries every set of blocks when there are at most this many sets (6 layers choose 3: 20), else goes greedily.
EXHAUSTIVE_LIMIT = 64


@register_config("block_pruning")
@dataclass(frozen=True)
class BlockPruning(Config):
    """Remove whole residual blocks (transformer layers, ResNet blocks) from the stacks they live in.

    Fields:
        ratio: fraction of the removable blocks to remove (rounded to the nearest count), in [0, 1).
        count: remove exactly this many blocks instead of ``ratio`` (None: use ``ratio``).
        importance: ``"loss"`` (measured on the validation split, or on the example inputs
            without data) or ``"influence"`` (one pass: blocks whose output is closest to their
            input go first).
        search: how ``"loss"`` looks for the set of blocks: ``"exhaustive"`` measures every set,
            ``"greedy"`` removes the cheapest block, measures again, and so on; ``"auto"`` is
            exhaustive up to 64 sets (MiniLM's 6 layers choose 2: greedy removes layers 2 then 1,
            cosine 0.831 on pydoc's validation split, while layers 1 and 3 keep 0.843).
        ignored: fnmatch patterns of block names that stay (``["encoder.layer.0"]``).
        samples: validation sentences or images that ``"loss"`` measures on (training items for ``"influence"``).
        seed: seed of the draw of those samples.
        measure_latency: time the model on the example inputs before and after.
        bridge: replace every run of consecutive removed blocks by one linear map of the features
            (a Linear over tokens, a 1x1 convolution over feature maps), fitted by least squares from
            the run's input to its output in the unpruned model on ``bridge_batches`` training batches
            (ReplaceMe, Shopkhoev et al. 2025; see :mod:`.bridges`). ``"loss"`` then measures every
            candidate set with its bridges in place. MiniLM without layers 1-3: cosine 0.70 -> 0.87 on
            pydoc's validation split before fine-tuning.
        bridge_batches: training batches of 32 that the bridges are fitted on (with ``data=``; else
            the example inputs).

    Example:
        >>> BlockPruning(count=3).importance
        'loss'
        >>> BlockPruning(ratio=1.0)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: BlockPruning.ratio=1.0 is invalid: expected a number in [0, 1)
    """

    ratio: float = 0.25
    count: int | None = None
    importance: str = "loss"
    search: str = "auto"
    ignored: tuple[str, ...] = ()
    samples: int = 256
    seed: int = 0
    measure_latency: bool = True
    bridge: bool = False
    bridge_batches: int = 16

    def validate(self) -> None:
        check_range(self, "ratio", 0, 1, hi_open=True)
        if self.count is not None:
            check_range(self, "count", 0, None, integer=True)
        check_choice(self, "importance", BLOCK_IMPORTANCES)
        check_choice(self, "search", BLOCK_SEARCHES)
        check_type(self, "ignored", tuple, "a list of block-name patterns such as ['encoder.layer.0']")
        if not all(isinstance(p, str) for p in self.ignored):
            raise ConfigError("ignored", self.ignored, "a list of block-name patterns such as ['encoder.layer.0']", "BlockPruning")
        check_range(self, "samples", 1, None, integer=True)
        check_range(self, "seed", 0, 2**63 - 1, integer=True)
        check_type(self, "measure_latency", bool, "true or false")
        check_type(self, "bridge", bool, "true or false")
        check_range(self, "bridge_batches", 1, None, integer=True)


# --------------------------------------------------------------------------- finding blocks


@dataclass(frozen=True)
class Block:
    """One removable block: the stack (container) it lives in and its position there."""

    container: str
    index: int
    key: str  # the block's name in its container ("1" in most stacks, "block1-1" in torchvision's RegNet)

    @property
    def name(self) -> str:
        return f"{self.container}.{self.key}" if self.container else self.key


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((t for t in (_first_tensor(v) for v in value) if t is not None), None)
    if isinstance(value, dict):
        return next((t for t in (_first_tensor(v) for v in value.values()) if t is not None), None)
    return None


def _block_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    # Hugging Face layers may take their hidden states as a keyword.
    x = _first_tensor(args)
    return x if x is not None else _first_tensor(kwargs.get("hidden_states", kwargs))


def _stacks(model: nn.Module) -> dict[str, list[int]]:
    """Containers holding repeated composite blocks, with the positions of those blocks (shape not yet checked)."""
    out: dict[str, list[int]] = {}
    for name, container in model.named_modules():
        if not isinstance(container, (nn.ModuleList, nn.Sequential)) or len(container) < 2:
            continue
        kinds = [type(m) for m in container]
        # A plain chain of layers (nn.Sequential, such as Conv-BN-ReLU) computes no residual: taking it out is not
        # removing a block but cutting the network. Blocks have their own forward.
        idx = [i for i, m in enumerate(container)
               if kinds.count(type(m)) >= 2 and not isinstance(m, (nn.Sequential, nn.ModuleList, LinearBridge))
               and any(True for _ in m.children()) and any(True for _ in m.parameters())]
        if idx:
            out[name] = idx
    return out


@torch.no_grad()
def find_blocks(model: nn.Module, example_inputs: tuple[Any, ...]) -> list[Block]:
    """The blocks of ``model`` that can be removed: repeated, composite, called once, output shaped like input.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("resnet_small", blocks=3)
        >>> [b.name for b in find_blocks(m, ds.models.example_inputs(m))]
        ['layer1.0', 'layer1.1', 'layer1.2', 'layer2.1', 'layer2.2', 'layer3.1', 'layer3.2']
    """
    stacks = _stacks(model)
    seen: dict[tuple[str, int], list[bool]] = {}
    handles = []
    for container, positions in stacks.items():
        stack = model.get_submodule(container)
        for i in positions:
            def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, key: tuple[str, int] = (container, i)) -> None:
                x, y = _block_input(args, kwargs), _first_tensor(out)
                seen.setdefault(key, []).append(x is not None and y is not None and x.shape == y.shape and x.dtype == y.dtype)
            handles.append(stack[i].register_forward_hook(hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    keys = {c: list(model.get_submodule(c)._modules) for c in stacks}
    blocks = [Block(c, i, keys[c][i]) for c, positions in stacks.items() for i in positions if seen.get((c, i)) == [True]]
    # A block inside another block (a stage that is itself a block of blocks): the outer one is the block when
    # the inner one sits in its internals, the inner ones when the outer is only their container.
    def inside(inner: Block, outer: Block) -> bool:
        return inner.name.startswith(outer.name + ".")
    return [b for b in blocks
            if not any(inside(o, b) and o.container == b.name for o in blocks)  # b holds a stack of blocks: they go
            and not any(inside(b, o) and b.container != o.name for o in blocks)]  # b is part of a block's insides


# --------------------------------------------------------------------------- removal and replay


def _renumber_layer_idx(block: nn.Module, old: int, new: int) -> None:
    # Hugging Face decoder layers index their key/value cache by layer_idx.
    for m in block.modules():
        if getattr(m, "layer_idx", None) == old:
            m.layer_idx = new


def _sync_layer_counts(model: nn.Module, old: int, new: int) -> None:
    """Hugging Face configs that count the stack's layers (``num_hidden_layers``) follow the removal."""
    done: set[int] = set()
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is None or id(cfg) in done:
            continue
        done.add(id(cfg))
        if getattr(cfg, "num_hidden_layers", None) == old:
            cfg.num_hidden_layers = new


def remove_blocks(model: nn.Module, container: str, removed: Sequence[int]) -> list[nn.Module]:
    """Delete the blocks at positions ``removed`` of the stack ``container``; returns the removed blocks.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2)))
        >>> _ = remove_blocks(m, "", [0, 2]); len(m)
        1
    """
    stack = model.get_submodule(container)
    if not isinstance(stack, (nn.ModuleList, nn.Sequential)):
        raise ValueError(f"{container!r} is a {type(stack).__name__}, not a stack of blocks")
    gone = set(int(i) for i in removed)
    if not gone or min(gone) < 0 or max(gone) >= len(stack) or len(gone) >= len(stack):
        raise ValueError(f"cannot remove blocks {sorted(gone)} of the {len(stack)} in {container!r}")
    old = len(stack)
    children = list(stack._modules.items())
    # Numbered stacks stay numbered 0..n-1 (a ModuleList must); named ones (RegNet's "block1-0") keep their names.
    numbered = isinstance(stack, nn.ModuleList) or [k for k, _ in children] == [str(i) for i in range(old)]
    kept = [(i, k, m) for i, (k, m) in enumerate(children) if i not in gone]
    for key in list(stack._modules):
        del stack._modules[key]
    for new, (i, key, m) in enumerate(kept):
        _renumber_layer_idx(m, i, new)
        stack._modules[str(new) if numbered else key] = m
    _sync_layer_counts(model, old, len(kept))
    return [m for i, (_, m) in enumerate(children) if i in gone]


@register_surgery("remove_blocks")
def replay_remove_blocks(model: nn.Module, entry: dict[str, Any]) -> None:
    """Replay of a ``remove_blocks`` entry on a freshly built model."""
    if set(entry) != {"op", "container", "removed"}:
        raise ValueError(f"expected the keys op, container and removed, got {sorted(entry)}")
    removed, container = entry["removed"], entry["container"]
    if not isinstance(removed, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in removed) \
            or len(set(removed)) != len(removed):
        raise ValueError("'removed' must be a list of distinct block positions")
    if not isinstance(container, str):
        raise ValueError("'container' must be the name of a stack of blocks")
    remove_blocks(model, container, removed)


# --------------------------------------------------------------------------- choosing


class _Snapshot:
    """The stacks of a model as they are now (their blocks, the blocks' ``layer_idx``, config layer counts), to put back."""

    def __init__(self, model: nn.Module, containers: Sequence[str]) -> None:
        self.model = model
        self.stacks = {c: list(model.get_submodule(c)._modules.items()) for c in containers}
        self.layer_idx = [(m, m.layer_idx) for blocks in self.stacks.values() for _, b in blocks for m in b.modules()
                          if isinstance(getattr(m, "layer_idx", None), int)]
        self.counts = [(m.config, m.config.num_hidden_layers) for m in model.modules()
                       if isinstance(getattr(getattr(m, "config", None), "num_hidden_layers", None), int)]

    def restore(self) -> None:
        for container, blocks in self.stacks.items():
            stack = self.model.get_submodule(container)
            for key in list(stack._modules):
                del stack._modules[key]
            for key, m in blocks:
                stack._modules[key] = m
        for m, idx in self.layer_idx:
            m.layer_idx = idx
        for cfg, n in self.counts:
            cfg.num_hidden_layers = n


# A fitted bridge and its relative error per run; None for a run whose features no bridge maps.
Fits = dict[Run, "tuple[LinearBridge, float] | None"]


def _by_stack(blocks: Sequence[Block]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for b in blocks:
        out.setdefault(b.container, []).append(b.index)
    return {c: sorted(v) for c, v in out.items()}


def _apply(model: nn.Module, removal: dict[str, list[int]], fits: Fits | None) -> list[dict[str, Any]]:
    """Remove the blocks at positions ``removal`` (of the unpruned stacks), then put in the fitted bridges of their runs.

    Returns the surgery entries, in the order they replay.
    """
    entries: list[dict[str, Any]] = []
    for container in sorted(removal):
        removed = sorted(removal[container])
        remove_blocks(model, container, removed)
        entries.append({"op": "remove_blocks", "container": container, "removed": removed})
        inserted = 0
        for run in runs_of({container: removed}) if fits is not None else []:
            fit = fits.get(run)
            if fit is None:
                continue  # features no bridge maps: the run is removed plainly (listed in the report)
            bridge = copy.deepcopy(fit[0])
            index = run[1] - sum(1 for p in removed if p < run[1]) + inserted
            stack = model.get_submodule(container)
            # A bridge left by an earlier pruning next to this run: the two compose into one (never two side by side).
            before = stack[index - 1] if index > 0 and isinstance(stack[index - 1], LinearBridge) else None
            after = stack[index] if index < len(stack) and isinstance(stack[index], LinearBridge) else None
            if before is not None and before.kind == bridge.kind and before.features == bridge.features:
                bridge, index = merge_bridges(before, bridge), index - 1
                entries.append(_take_out(model, container, index))
                inserted -= 1
            if after is not None and after.kind == bridge.kind and after.features == bridge.features:
                bridge = merge_bridges(bridge, after)
                entries.append(_take_out(model, container, index))
                inserted -= 1
            insert_into_stack(model, container, index, bridge)
            entries.append({"op": "insert_bridge", "container": container, "index": index,
                            "features": bridge.features, "kind": bridge.kind})
            inserted += 1
    return entries


def _take_out(model: nn.Module, container: str, index: int) -> dict[str, Any]:
    remove_blocks(model, container, [index])
    return {"op": "remove_blocks", "container": container, "removed": [index]}


def _without_set(model: nn.Module, blocks: Sequence[Block], probe: Any, fits: Fits | None = None) -> float:
    """The probe's loss with ``blocks`` taken out (bridged when ``fits`` are given), then put back exactly as they were."""
    removal = _by_stack(blocks)
    snapshot = _Snapshot(model, sorted(removal))
    try:
        _apply(model, removal, fits)
        return float(probe(model))
    finally:
        snapshot.restore()


def _fit_missing(model: nn.Module, fits: Fits | None, sets: Sequence[Sequence[Block]], batches: list[tuple[Any, ...]]) -> None:
    """Fit the bridges of every run of ``sets`` not fitted yet (on the model as it is: unpruned)."""
    if fits is None:
        return
    needed = sorted({run for blocks in sets for run in runs_of(_by_stack(blocks))} - set(fits))
    if needed:
        fitted = fit_bridges(model, needed, batches)
        fits.update({run: fitted.get(run) for run in needed})


def _block_sets(candidates: list[Block], sizes: dict[str, int], count: int, search: str) -> list[tuple[Block, ...]] | None:
    """Every set of ``count`` candidates that leaves each stack a block, or None when the search should go greedily."""
    if search == "greedy" or (search == "auto" and math.comb(len(candidates), count) > EXHAUSTIVE_LIMIT):
        return None
    return [s for s in itertools.combinations(candidates, count)
            if all(sum(1 for b in s if b.container == c) < n for c, n in sizes.items())]


@torch.no_grad()
def _influence(model: nn.Module, blocks: list[Block], batches: list[tuple[Any, ...]]) -> dict[Block, float]:
    """Mean cosine distance between each block's input and output over the batches (ShortGPT's block influence)."""
    sums: dict[Block, list[float]] = {b: [0.0, 0.0] for b in blocks}
    handles = []
    for b in blocks:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, b: Block = b) -> None:
            x, y = _block_input(args, kwargs), _first_tensor(out)
            d = 1.0 - F.cosine_similarity(x.float().flatten(0, -2) if x.dim() > 1 else x.float()[None],
                                          y.float().flatten(0, -2) if y.dim() > 1 else y.float()[None], dim=-1)
            sums[b][0] += float(d.sum())
            sums[b][1] += d.numel()
        handles.append(model.get_submodule(b.container)[b.index].register_forward_hook(hook, with_kwargs=True))
    try:
        for batch in batches:
            model(*batch)
    finally:
        for h in handles:
            h.remove()
    return {b: s / max(n, 1) for b, (s, n) in sums.items()}


def _target_count(config: BlockPruning, candidates: int) -> int:
    return config.count if config.count is not None else int(config.ratio * candidates + 0.5)


@prune_.register(BlockPruning)
def block_prune(model: nn.Module, config: BlockPruning, *, example_inputs: Any = None, data: Any = None, **_: Any) -> Report:
    """Physically remove whole blocks as ``config`` says; records the surgery log; returns a Report.

    ``data`` (a DataBundle) gives the validation split that ``"loss"`` measures on
    and the training items of ``"influence"``; without it both use ``example_inputs``.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("resnet_small", blocks=2)
        >>> r = ds.prune_(m, ds.BlockPruning(count=1), example_inputs=ds.models.example_inputs(m))
        >>> r.figures["blocks_before"] - r.figures["blocks_after"]
        1
    """
    from ..factorize.calibrate import LossProbe  # the same loss that ranks layers for factorization
    from .activation_importance import calibration_batches

    if example_inputs is None and data is not None:
        from ..models.inputs import example_inputs as _examples

        example_inputs = _examples(model, data)
    if example_inputs is None:
        raise ConfigError("example_inputs", None, "inputs to find the blocks with: prune_(model, cfg, example_inputs=(x,)) or data=bundle",
                          "BlockPruning")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if (exc := forward_error(model, inputs)) is not None:
        raise ConfigError("example_inputs", f"inputs on which model(*example_inputs) fails ({type(exc).__name__}: {str(exc)[:200]})",
                          "a tuple of tensors the model's forward takes positionally, in order", "BlockPruning")
    all_blocks = find_blocks(model, inputs)
    candidates = [b for b in all_blocks if not any(fnmatch.fnmatchcase(b.name, p) for p in config.ignored)]
    count = _target_count(config, len(all_blocks))
    per_stack = {c: sum(1 for b in candidates if b.container == c) for c in {b.container for b in candidates}}
    # Bridges left by an earlier pruning are not blocks: every stack keeps a real one.
    sizes = {c: sum(1 for m in model.get_submodule(c) if not isinstance(m, LinearBridge)) for c in per_stack}
    # Every stack keeps at least one block.
    removable = sum(min(n, sizes[c] - 1) for c, n in per_stack.items())
    if count > removable:
        found = ", ".join(b.name for b in all_blocks[:8]) or "none"
        raise UnsupportedModelError(
            f"BlockPruning wants to remove {count} blocks but {type(model).__name__} has {removable} removable "
            f"(repeated residual blocks whose output is shaped like their input, one kept per stack; found: {found}). "
            "Lower count or ratio, loosen ignored, or use ChannelPruning to make blocks narrower instead."
        )
    report = Report(method="block_pruning")
    report.figures.update(blocks_before=len(all_blocks), params_before=sum(p.numel() for p in model.parameters()))
    costs = [measure_cost(model, inputs)] if config.measure_latency and count else []
    was_training = model.training
    model.eval()
    chosen: list[tuple[Block, float]] = []  # (block, its score when chosen), in the order chosen
    entries: list[dict[str, Any]] = []
    snapshot = _Snapshot(model, sorted(per_stack))
    # Data are read before any block is taken out, so that a failure there is not blamed on the removal.
    batches: list[Any] = []
    probe: LossProbe | None = None
    if count and config.importance == "influence":
        batches = calibration_batches(model, data, max(1, config.samples // 32), 32, config.seed) if data is not None else [inputs]
    elif count:
        probe = LossProbe(model, data, inputs, config.samples, seed=config.seed)
    fit_batches: list[Any] = []
    fits: Fits | None = None
    if count and config.bridge:
        fit_batches = calibration_batches(model, data, config.bridge_batches, 32, config.seed) if data is not None else [inputs]
        fits = {}
    try:
        if count and config.importance == "influence":
            scores = _influence(model, candidates, batches)
            left = dict(sizes)
            for b in sorted(candidates, key=lambda b: (scores[b], b.name)):
                if len(chosen) < count and left[b.container] > 1:
                    left[b.container] -= 1
                    chosen.append((b, scores[b]))
        elif count and probe is not None:
            report.figures["loss_before"] = probe(model)
            sets = _block_sets(candidates, sizes, count, config.search)
            if sets is not None:
                _fit_missing(model, fits, sets, fit_batches)
                losses = [_without_set(model, chosen_set, probe, fits) for chosen_set in sets]
                best_set = sets[min(range(len(sets)), key=losses.__getitem__)]  # ties: the first in model order
                chosen = [(b, min(losses)) for b in best_set]
                report.figures["search"] = f"exhaustive ({len(sets)} sets)"
            else:
                # Each step measures every block left on top of those chosen so far (all from the unpruned
                # model, so that the bridges of merged runs are fitted afresh).
                for _ in range(count):
                    taken = [b for b, _ in chosen]
                    left = {c: sizes[c] - sum(1 for b in taken if b.container == c) for c in sizes}
                    live = [b for b in candidates if b not in taken and left[b.container] > 1]
                    _fit_missing(model, fits, [[*taken, b] for b in live], fit_batches)
                    step = {b: _without_set(model, [*taken, b], probe, fits) for b in live}
                    best = min(live, key=step.__getitem__)  # ties: the first in model order
                    chosen.append((best, step[best]))
                report.figures["search"] = "greedy"
            report.figures["loss_after"] = chosen[-1][1]
        if chosen:
            _fit_missing(model, fits, [[b for b, _ in chosen]], fit_batches)
            entries = _apply(model, _by_stack([b for b, _ in chosen]), fits)
        exc = forward_error(model, inputs) if chosen else None
    except Exception as err:  # noqa: BLE001 - any failure of a forward without a block: put the model back, then say why
        exc = err
    finally:
        model.train(was_training)
    if exc is not None:
        snapshot.restore()
        raise UnsupportedModelError(
            f"{type(model).__name__} does not run with blocks removed ({type(exc).__name__}: {str(exc)[:200]}): its forward "
            "relies on the number of blocks. The model is unchanged; keep those blocks with ignored=[...], or use "
            "ChannelPruning instead."
        ) from None
    for entry in entries:
        record_surgery(model, entry)
    report.changed = [b.name for b, _ in chosen]
    report.per_layer = {b.name: {"score": s, "order": k} for k, (b, s) in enumerate(chosen)}
    if fits is not None and chosen:
        runs = runs_of(_by_stack([b for b, _ in chosen]))
        report.figures["bridges"] = {f"{c}.{a}-{z}" if c else f"{a}-{z}": (None if fits.get((c, a, z)) is None else fits[(c, a, z)][1])  # type: ignore[index]
                                     for c, a, z in runs}
        for c, a, z in runs:
            if fits.get((c, a, z)) is None:
                report.skipped[f"{c}.{a}-{z}"] = "no bridge: the run's input or output is not a feature tensor of one shape"
    report.figures.update(blocks_removed=len(chosen), blocks_after=len(all_blocks) - len(chosen),
                          params_after=sum(p.numel() for p in model.parameters()), importance=config.importance)
    if costs:
        costs.append(measure_cost(model, inputs))
        report.figures.update(macs_before=costs[0]["macs"], macs_after=costs[-1]["macs"],
                              latency_ms_before=costs[0]["latency_ms"], latency_ms_after=costs[-1]["latency_ms"],
                              speedup=costs[0]["latency_ms"] / max(costs[-1]["latency_ms"], 1e-9))
    return report


__all__: Sequence[str] = ["BLOCK_IMPORTANCES", "BLOCK_SEARCHES", "EXHAUSTIVE_LIMIT", "Block", "BlockPruning", "block_prune", "find_blocks", "remove_blocks",
                          "replay_remove_blocks"]
