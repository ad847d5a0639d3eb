"""Structured (channel) pruning that physically removes channels: ``prune_(model, ChannelPruning(...), example_inputs=...)``.

Built on Torch-Pruning's DependencyGraph: it traces the model once on
``example_inputs`` and finds which layers are coupled (a conv's filters, its
batch norm, the next conv's inputs, every branch of a residual addition, the
classifier's inputs), so that removing a channel removes it everywhere.

Three rules on top of Torch-Pruning:

- The model's outputs never change shape: every layer that produces an output
  (found by walking the traced graph back from its ends, plus the last Linear)
  is left out of output-channel pruning, whatever kind of layer it is.
- Every removal is recorded in the surgery log as kept indices per module
  (``{"op": "channel_prune", "module": "conv1", "out": [...], "in": [...]}``,
  or ``"features"`` for norms and depthwise convs), so a pruned model saved as
  .dsz rebuilds from its base factory by plain slicing. After pruning, the log
  is replayed on a meta-device copy and every shape is checked against the
  pruned model, so a log that would not rebuild the model is never written.
- Groups that touch a layer the replay cannot slice (grouped non-depthwise
  convs, GroupNorm, bare ``nn.Parameter``, attention internals) are skipped and
  listed in the report, never half-pruned.

Transformer attention layers with separate query/key/value projections (BERT,
MiniLM, DistilBERT, q_proj-style models; see :mod:`.heads`) lose whole heads
(``head_ratio``), recorded as channel slices plus an ``attention_heads`` entry
with the new head count. ``nn.MultiheadAttention`` keeps its heads (its packed
in-projection cannot be sliced by the replay); its FFN neurons are pruned.

Example:
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet5")
    >>> inputs = ds.models.example_inputs(model)
    >>> report = ds.prune_(model, ds.ChannelPruning(ratio=0.5), example_inputs=inputs)
    >>> model.conv1.out_channels, model.fc2.out_features
    (10, 10)
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch_pruning._helpers import to_plain_idxs as _plain
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..config import Config, check_choice, check_range, check_type, register_config
from ..dispatch import Report, prune_
from ..errors import ConfigError, DeepshrinkError, UnsupportedModelError
from ..models.inputs import run_once
from ..surgery import record_surgery, register_surgery
from .cost import measure_cost, warn_step
from .rollback import Rollback
from .time_limit import TimeLimitExceeded, time_limit
from .verify import outputs_differ, restore_zeroed, zero_channels, zero_removed_channels, zeroing_equals_removal
from .output_layers import bridge_input_layers, graph_output_layers, traced_outputs
from .heads import find_attention, replay_attention_heads, set_head_count
from .importance import IMPORTANCES, build_importance

SCOPES = ("layer", "global")
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm)


@register_config("channel_pruning")
@dataclass(frozen=True)
class ChannelPruning(Config):
    """Remove a fraction of the channels (conv filters, linear neurons) of every prunable group.

    Fields:
        ratio: fraction of each group's channels to remove, in [0, 1).
        importance: ``"l1"``, ``"l2"``, ``"fpgm"``, ``"bn_scale"``, ``"random"``, or a criterion
            measured on data (``data=`` training batches, else the example inputs):
            ``"taylor"``, ``"mean_activation"``, ``"apoz"``, ``"scop"``, ``"obs"`` (see :mod:`.importance`;
            ``"obs"`` picks the channels a least-squares refit can best do without, so it needs
            ``reconstruct=True``).
        scope: ``"layer"`` (each group loses ``ratio`` of its channels) or
            ``"global"`` (one ranking over all groups; the total loses ``ratio``).
        round_to: keep channel counts a multiple of this (rounded down), or None.
        ignored: module-name patterns (fnmatch) whose output channels are kept.
        iterative_steps: prune in this many steps, re-scoring between steps.
        seed: seed of the ``"random"`` criterion and of the draw of calibration batches.
        batches: random training batches (of ``batch_size``) measured by the data-driven criteria when
            ``data=`` is given; 16 x 32 = 512 samples by default (Taylor with 4 batches ranked channels
            worse than random on a small ResNet, with 16 better: BENCHMARKS.md, criteria).
        reconstruct: after pruning, refit by least squares every Linear that lost inputs so that
            its output on ``data`` (``reconstruct_batches`` training batches of 32) matches the
            unpruned model's (see :mod:`.reconstruct`); needs ``data=``.
        reconstruct_batches: batches used by ``reconstruct``.
        batch_size: batch size of the data-driven criteria's batches (Taylor, activations, SCOP).
        scop_epochs: epochs over the training split that SCOP trains its real/knockoff factors (the
            authors train 20 on ImageNet; 2 left a small ResNet below random pruning, 5 above it).
        scop_lr: learning rate of SCOP's factors (Adam, betas 0.5 and 0.9, as the authors; weights stay frozen).
        knockoff_rank: rank of the Gaussian fitted to the inputs that SCOP's knockoffs are drawn from.
        measure_latency: time the model on the example inputs before and after every step
            (CPU latency and MACs in the report; a warning when a step saves MACs but not time).
        head_ratio: fraction of the attention heads of each transformer attention layer to
            remove (whole heads: their query, key and value rows and the output projection's
            columns), the count rounded up (12 heads x 0.34 = 4.08: 5 removed); None uses ``ratio``.
        trace_seconds: how long Torch-Pruning may take to build its dependency graph before the model
            is refused (UnsupportedModelError, the model untouched): on a few architectures (RexNet's
            partial-channel residuals) the graph grows without end. ResNet-50 takes about 2 s, ViT-B/16
            about 7 s on a laptop CPU. 0: no limit.
        batchnorm_samples: when ``data=`` is given, re-estimate every BatchNorm layer's running
            statistics on this many training samples after the removal (adaptive BN, Li et al.
            2020, EagleEye): removed channels shift the statistics of every layer after them, and
            the stale ones can leave a pruned ResNet at chance before any fine-tuning. 0 keeps
            the old statistics.

    Example:
        >>> ChannelPruning(ratio=0.3, importance="fpgm").scope
        'layer'
        >>> ChannelPruning(ratio=1.0)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: ChannelPruning.ratio=1.0 is invalid: expected a number in [0, 1)
    """

    ratio: float = 0.5
    importance: str = "l1"
    scope: str = "layer"
    round_to: int | None = None
    ignored: tuple[str, ...] = ()
    iterative_steps: int = 1
    seed: int = 0
    batches: int = 16
    head_ratio: float | None = None
    measure_latency: bool = True
    reconstruct: bool = False
    reconstruct_batches: int = 8
    batch_size: int = 32
    scop_epochs: int = 5
    scop_lr: float = 4e-3
    knockoff_rank: int = 64
    batchnorm_samples: int = 2000
    trace_seconds: float = 120.0

    def validate(self) -> None:
        check_range(self, "ratio", 0, 1, hi_open=True)
        check_range(self, "trace_seconds", 0, None)
        check_range(self, "batchnorm_samples", 0, None, integer=True)
        if self.head_ratio is not None:
            check_range(self, "head_ratio", 0, 1, hi_open=True)
        check_choice(self, "importance", IMPORTANCES)
        check_choice(self, "scope", SCOPES)
        if self.round_to is not None:
            check_range(self, "round_to", 1, None, integer=True)
        check_type(self, "ignored", tuple, "a list of module-name patterns such as ['fc*', 'features.0']")
        if not all(isinstance(p, str) for p in self.ignored):
            raise ConfigError("ignored", self.ignored, "a list of module-name patterns such as ['fc*', 'features.0']", "ChannelPruning")
        check_range(self, "iterative_steps", 1, None, integer=True)
        check_range(self, "seed", 0, 2**63 - 1, integer=True)
        check_range(self, "batches", 1, None, integer=True)
        check_type(self, "measure_latency", bool, "true or false")
        check_type(self, "reconstruct", bool, "true or false")
        if self.importance == "obs" and not self.reconstruct:
            # OBS scores assume the refit's compensation; without it they rank channels for a model that is never built.
            raise ConfigError("reconstruct", self.reconstruct, "true with importance='obs' (the criterion scores "
                              "channels by the error left after the least-squares refit)", "ChannelPruning")
        check_range(self, "reconstruct_batches", 1, None, integer=True)
        check_range(self, "batch_size", 1, None, integer=True)
        check_range(self, "scop_epochs", 1, None, integer=True)
        check_range(self, "scop_lr", 0, None, lo_open=True)
        check_range(self, "knockoff_rank", 1, None, integer=True)


# --------------------------------------------------------------------------- which layers, which axis


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _replayable(m: nn.Module) -> bool:
    """Whether the replay below can slice this module (so that pruning it may be recorded)."""
    if isinstance(m, (nn.Linear, nn.Embedding, nn.PReLU, nn.LayerNorm, nn.modules.batchnorm._NormBase)):
        return True
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.groups == 1 or _is_depthwise(m)
    return not any(True for _ in m.parameters(recurse=False))  # activations, pools, dropout: nothing to slice


def _axis(m: nn.Module, out_fn: bool) -> str:
    # Norms and depthwise convs carry one channel axis that is both input and output.
    if isinstance(m, (nn.PReLU, *_NORMS)) or _is_depthwise(m):
        return "features"
    return "out" if out_fn else "in"


def _size(m: nn.Module, axis: str) -> int:
    if isinstance(m, nn.Linear):
        return m.out_features if axis == "out" else m.in_features
    if isinstance(m, nn.Embedding):
        return m.embedding_dim
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.in_channels if axis == "in" else m.out_channels
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[-1]
    if isinstance(m, nn.PReLU):
        return m.num_parameters
    return m.num_features  # batch / instance norm


# --------------------------------------------------------------------------- replay (plain slicing)


def _kept(entry: dict[str, Any], key: str, size: int) -> Tensor | None:
    kept = entry.get(key)
    if kept is None:
        return None
    if not isinstance(kept, list) or not kept or not all(isinstance(i, int) and not isinstance(i, bool) for i in kept):
        raise ValueError(f"{key!r} must be a non-empty list of channel indices")
    if any(b <= a for a, b in zip(kept, kept[1:])) or kept[0] < 0 or kept[-1] >= size:
        raise ValueError(f"{key!r} must be strictly increasing indices in [0, {size})")
    return torch.tensor(kept, dtype=torch.long)


def _slice_param(m: nn.Module, name: str, dim: int, idx: Tensor) -> None:
    old = getattr(m, name)
    if old is None:
        return
    new = old.detach().index_select(dim, idx.to(old.device))
    if isinstance(old, nn.Parameter):
        setattr(m, name, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(m, name, new)  # a registered buffer stays a buffer


@register_surgery("channel_prune")
def replay_channel_prune(model: nn.Module, entry: dict[str, Any]) -> None:
    """Slice one module to the kept channel indices of a ``channel_prune`` surgery entry.

    Works on the meta device too (``deepshrink.load`` checks shapes there first).

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 3))
        >>> replay_channel_prune(m, {"op": "channel_prune", "module": "0", "out": [0, 2]})
        >>> tuple(m[0].weight.shape), m[0].out_features
        ((2, 4), 2)
    """
    extra = set(entry) - {"op", "module", "out", "in", "features"}
    if extra:
        raise ValueError(f"unknown keys {sorted(extra)}")
    if not isinstance(entry.get("module"), str):
        raise ValueError("'module' must name a submodule")
    m = model.get_submodule(entry["module"])
    if isinstance(m, nn.Linear):
        out, inp = _kept(entry, "out", m.out_features), _kept(entry, "in", m.in_features)
        if out is not None:
            _slice_param(m, "weight", 0, out)
            _slice_param(m, "bias", 0, out)
            m.out_features = len(out)
        if inp is not None:
            _slice_param(m, "weight", 1, inp)
            m.in_features = len(inp)
    elif isinstance(m, nn.modules.conv._ConvNd) and _is_depthwise(m):
        feats = _kept(entry, "features", m.out_channels)
        if feats is not None:
            _slice_param(m, "weight", 0, feats)
            _slice_param(m, "bias", 0, feats)
            m.in_channels = m.out_channels = m.groups = len(feats)
    elif isinstance(m, nn.modules.conv._ConvNd) and m.groups == 1:
        out, inp = _kept(entry, "out", m.out_channels), _kept(entry, "in", m.in_channels)
        out_dim, in_dim = (1, 0) if m.transposed else (0, 1)  # transposed convs store (in, out, ...)
        if out is not None:
            _slice_param(m, "weight", out_dim, out)
            _slice_param(m, "bias", 0, out)
            m.out_channels = len(out)
        if inp is not None:
            _slice_param(m, "weight", in_dim, inp)
            m.in_channels = len(inp)
    elif isinstance(m, nn.Embedding):
        out = _kept(entry, "out", m.embedding_dim)
        if out is not None:
            _slice_param(m, "weight", 1, out)
            m.embedding_dim = len(out)
    elif isinstance(m, (nn.LayerNorm, nn.PReLU, nn.modules.batchnorm._NormBase)):
        feats = _kept(entry, "features", _size(m, "features"))
        if feats is None:
            return
        if isinstance(m, nn.LayerNorm):
            dim = len(m.normalized_shape) - 1
            _slice_param(m, "weight", dim, feats)
            _slice_param(m, "bias", dim, feats)
            m.normalized_shape = (*m.normalized_shape[:-1], len(feats))
        elif isinstance(m, nn.PReLU):
            if m.num_parameters > 1:
                _slice_param(m, "weight", 0, feats)
            m.num_parameters = len(feats)
        else:
            for name in ("weight", "bias", "running_mean", "running_var"):
                _slice_param(m, name, 0, feats)
            m.num_features = len(feats)
    else:
        raise ValueError(f"module {entry['module']!r} ({type(m).__name__}) cannot be channel-pruned")


# --------------------------------------------------------------------------- the handler


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    if example_inputs is None:
        raise ConfigError(
            "example_inputs",
            None,
            "example inputs to trace the model, e.g. prune_(model, cfg, example_inputs=deepshrink.models.example_inputs(model))",
            "ChannelPruning",
        )
    if isinstance(example_inputs, Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)):
        return tuple(example_inputs)
    raise ConfigError("example_inputs", type(example_inputs).__name__, "a tensor or a tuple of tensors for model(*inputs)", "ChannelPruning")


def _fixed_layers(model: nn.Module, cfg: ChannelPruning) -> list[nn.Module]:
    fixed: list[nn.Module] = []
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        fixed.append(linears[-1])  # the classifier keeps all its classes
    for name, m in model.named_modules():
        if cfg.ignored and any(fnmatch.fnmatchcase(name, p) for p in cfg.ignored):
            fixed.extend(m.modules())
        # nn.MultiheadAttention packs q, k, v into one parameter that the replay cannot slice by head.
        if isinstance(m, nn.MultiheadAttention):
            fixed.extend(m.modules())
    return fixed


class NothingPrunedWarning(UserWarning):
    """Channel pruning asked for a cut but every group was kept (the report's ``skipped`` says why)."""


# Blocks on which Torch-Pruning's dependency tracing does not end well, by class name (torchvision and timm
# name them alike): the index mapping of Swin's patch merging (a concatenation of four strided spatial slices)
# grew past 24 GiB for swin_t, and MaxViT's window partitions did not finish tracing (BENCHMARKS.md, zoo).
# Refusing up front leaves the model untouched instead of the process killed for memory (the trace time limit
# cannot stop a trace that fills memory first). Swin's patch merging reduces the concatenated slices with a
# Linear; other blocks of the same name reduce with a strided convolution (timm's FasterNet), which traces fine.
UNTRACEABLE_BLOCKS = {
    "PatchMerging": "Swin's patch merging (a concatenation of strided spatial slices)",
    "PatchMergingV2": "Swin V2's patch merging (a concatenation of strided spatial slices)",
    "WindowPartition": "MaxViT's window partition (reshapes that mix spatial and channel axes)",
}


def _untraceable(m: nn.Module) -> str | None:
    why = UNTRACEABLE_BLOCKS.get(type(m).__name__)
    if why is not None and why.startswith("Swin") and not isinstance(getattr(m, "reduction", None), nn.Linear):
        return None
    return why


def _refuse_known_untraceable(model: nn.Module) -> None:
    for name, m in model.named_modules():
        why = _untraceable(m)
        if why is not None:
            raise UnsupportedModelError(
                f"channel pruning cannot trace {type(model).__name__}: {name!r} is {why}, on which Torch-Pruning's "
                "dependency graph runs out of memory or does not finish. Prune it unstructured "
                "(deepshrink.MagnitudePruning) or factorize it (deepshrink.SVD) instead."
            )


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_pruner(model: nn.Module, inputs: tuple[Any, ...], config: ChannelPruning, fixed: list[nn.Module],
                 attention: list[Any], head_ratio: float, num_heads: dict[nn.Module, int], importance: Any) -> Any:
    """Torch-Pruning's pruner over ``model``: traces the dependency graph (the model is not changed)."""
    return tp.pruner.MetaPruner(
        model,
        inputs,
        importance=importance,
        output_transform=traced_outputs,
        global_pruning=config.scope == "global",
        pruning_ratio=config.ratio,
        iterative_steps=config.iterative_steps,
        ignored_layers=fixed,
        round_to=config.round_to,
        # Each attention layer is a scope of its own: Torch-Pruning removes heads only inside a
        # scope that prunes something, and with prune_head_dims=False no single dimension goes.
        pruning_ratio_dict={a.projections: head_ratio for a in attention} if head_ratio > 0 else None,
        num_heads=num_heads,
        prune_num_heads=bool(num_heads) and head_ratio > 0,
        prune_head_dims=False,
        head_pruning_ratio=head_ratio,
    )


@prune_.register(ChannelPruning)
def channel_prune(
    model: nn.Module, config: ChannelPruning, *, example_inputs: Any = None, data: Any = None, **_: Any
) -> Report:
    """Physically remove channels as ``config`` says; records the surgery log; returns a Report.

    ``example_inputs`` (a tensor or tuple for ``model(*inputs)``) is needed to
    trace the model; without it the first test items of ``data`` are used, and
    with neither a ConfigError says what to pass.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("vgg_small")
        >>> r = ds.prune_(m, ds.ChannelPruning(ratio=0.25, round_to=2), example_inputs=ds.models.example_inputs(m))
        >>> r.figures["params_after"] < r.figures["params_before"]
        True
    """
    if example_inputs is None and data is not None:
        # In a recipe the data stand in for example inputs: the first test items, batch 1.
        from ..models.inputs import example_inputs as _examples

        example_inputs = _examples(model, data)
    inputs = _as_tuple(example_inputs)
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError(
            "model", "a model with masks or codebooks", "a plain model: fold masks first (deepshrink.fold_masks)", "ChannelPruning"
        )
    if config.reconstruct and data is None:
        raise ConfigError("reconstruct", True, "data to refit on: prune_(model, cfg, data=bundle), or reconstruct=False", "ChannelPruning")
    # Inputs the model cannot run on would otherwise surface as a tracing failure deep in Torch-Pruning.
    before, exc = run_once(model, inputs)
    if exc is not None:
        raise ConfigError("example_inputs", f"inputs on which model(*example_inputs) fails ({type(exc).__name__}: "
                          f"{str(exc)[:200]})", "a tuple of tensors the model's forward takes positionally, in order",
                          "ChannelPruning")
    _refuse_known_untraceable(model)
    report = Report(method="channel_pruning")
    report.figures["params_before"] = _n_params(model)
    names = {m: n for n, m in model.named_modules()}
    # Copied before tracing: a traced model may hold autograd tensors that cannot be deep-copied (LeViT).
    undo = Rollback(model)
    was_training = model.training
    model.eval()  # tracing and scoring must not move batch-norm statistics
    fixed = _fixed_layers(model, config)
    fixed_ids = {id(m) for m in fixed}
    # Transformer attention: whole heads go (query, key and value rows of a head and the
    # output projection's matching columns), never single dimensions inside a head.
    attention = [a for a in find_attention(model) if id(a.module) not in fixed_ids]
    head_ratio = config.ratio if config.head_ratio is None else config.head_ratio
    num_heads = {proj: a.num_heads for a in attention for proj in a.projections}
    importance = build_importance(config, model, inputs, data)
    try:
        with time_limit(config.trace_seconds):
            pruner = _meta_pruner(model, inputs, config, fixed, attention, head_ratio, num_heads, importance)
    except TimeLimitExceeded:
        undo.restore()  # also the hooks the interrupted tracer left, and the training mode
        raise UnsupportedModelError(
            f"channel pruning cannot trace the dependencies of {type(model).__name__}: Torch-Pruning's dependency "
            f"graph did not finish within {config.trace_seconds:g} s (ChannelPruning.trace_seconds); on some "
            "architectures it grows without end (RexNet's partial-channel residuals). The model is unchanged. "
            "Prune it unstructured (deepshrink.MagnitudePruning) or factorize it instead, or raise trace_seconds."
        ) from None
    except (ZeroDivisionError, IndexError, KeyError, AssertionError, TypeError, AttributeError) as err:
        undo.restore()
        # Torch-Pruning's tracer fails on some reshapes and concatenations it cannot map to channels
        # (ShuffleNet's channel shuffle, Swin's patch merging); nothing has changed in the model yet.
        raise UnsupportedModelError(
            f"channel pruning cannot trace the dependencies of {type(model).__name__} "
            f"(Torch-Pruning's dependency graph failed with {type(err).__name__}: {err}); usually a reshape or concatenation "
            "whose channel mapping it cannot infer, such as a channel shuffle or a patch merging. "
            "Prune it unstructured (deepshrink.MagnitudePruning) or factorize it instead."
        ) from err
    for m in graph_output_layers(pruner.DG, set(names)):
        pruner.ignored_layers.extend(m.modules())
        report.skipped[names[m]] = "produces a model output (output shape is kept)"
    for m in bridge_input_layers(pruner.DG, model):
        pruner.ignored_layers.append(m)
        report.skipped.setdefault(names[m], "feeds a linear bridge (its output width is kept)")

    fresh_report = copy.deepcopy(report)
    try:
        try:
            entries = _prune_steps(model, config, inputs, data, pruner, attention, names, before, report,
                                   shadow=copy.deepcopy(undo.saved).to("meta"))
            _check_still_runs(model, inputs, before, undo.saved, entries)
        except DeepshrinkError:
            raise  # our own refusal (a criterion that does not suit the model): nothing to retry
        except Exception as first:
            # Torch-Pruning mis-mapped a coupling somewhere (torch.stack of branches, a split feeding several
            # convolutions). Start again from the unpruned model, this time group by group: a group whose
            # scoring fails or whose removal stops the model from running is put back and kept whole.
            spare = copy.deepcopy(undo.saved)
            undo.restore()
            undo = Rollback(model, saved=spare)
            report = copy.deepcopy(fresh_report)
            report.figures["careful_retry"] = f"{type(first).__name__}: {str(first)[:200]}"
            pruner = _meta_pruner(model, inputs, config, fixed + list(pruner.ignored_layers), attention, head_ratio,
                                  num_heads, importance)
            entries = _prune_steps(model, config, inputs, data, pruner, attention, names, before, report,
                                   shadow=copy.deepcopy(undo.saved).to("meta"), careful=True)
            _check_still_runs(model, inputs, before, undo.saved, entries)
            if not entries:
                raise UnsupportedModelError(
                    f"channel pruning could remove nothing from {type(model).__name__}: the removal of every group "
                    f"broke the model or changed what it computes (first: {type(first).__name__}: {str(first)[:200]}); "
                    "the model is unchanged. A layer type Torch-Pruning does not know (e.g. a convolution with an "
                    "extra per-channel parameter) is the usual cause. Prune it unstructured "
                    "(deepshrink.MagnitudePruning) or factorize it (deepshrink.SVD) instead."
                ) from first
    except BaseException as err:
        # Whatever went wrong half-way, the caller's model is put back exactly as it was.
        undo.restore()
        model.train(was_training)
        if not isinstance(err, Exception) or isinstance(err, DeepshrinkError):
            raise
        raise UnsupportedModelError(
            f"channel pruning failed on {type(model).__name__} ({type(err).__name__}: {str(err)[:300]}); the model is "
            "unchanged. Torch-Pruning's dependency graph mis-mapped a coupling (typically torch.split, torch.stack or "
            "a reshape between branches). Keep the blocks involved out with ChannelPruning(ignored=[...]), or prune "
            "unstructured (deepshrink.MagnitudePruning) or factorize (deepshrink.SVD) instead."
        ) from err
    model.train(was_training)
    unpruned = undo.saved  # the model as it was: what reconstruct refits toward
    if not entries and (config.ratio > 0 or (config.head_ratio or 0) > 0):
        reasons = "; ".join(f"{k}: {v}" for k, v in list(report.skipped.items())[:4]) or "no group reached a channel"
        warnings.warn(f"channel pruning removed nothing from {type(model).__name__} ({reasons}). Prune it unstructured "
                      "(deepshrink.MagnitudePruning) or factorize it (deepshrink.SVD) instead.", NothingPrunedWarning,
                      stacklevel=3)
    if data is not None and config.batchnorm_samples > 0:
        from ..quantize.bn_stats import BatchNormStats, refresh_batchnorm

        refreshed = refresh_batchnorm(model, data, BatchNormStats(samples=config.batchnorm_samples, seed=config.seed))
        if refreshed:
            report.figures["batchnorm_refreshed"] = refreshed
    if config.reconstruct:
        from .reconstruct import calibration_batches, reconstruct_consumers

        order = {n: i for i, n in enumerate(names.values())}
        consumers = [e["module"] for e in (entries[n] for n in sorted(entries, key=order.__getitem__)) if "in" in e]
        batches = calibration_batches(model, data, config.reconstruct_batches, seed=config.seed)
        kept = {e["module"]: e["out"] for e in entries.values() if "out" in e}
        report.figures["reconstruction"] = reconstruct_consumers(model, unpruned, consumers, batches, kept_outputs=kept)
    report.figures["params_after"] = _n_params(model)
    report.figures["param_ratio"] = report.figures["params_after"] / max(report.figures["params_before"], 1)
    return report


def _breakage(model: nn.Module, inputs: tuple[Any, ...], want: Any, values: bool) -> str | None:
    """Why ``model`` does not give ``want`` on the example inputs (None when it does, up to float rounding).

    ``want`` is the original's output with the removed channels zeroed (``values``), or the unpruned
    output when only the shapes can be compared (a layer norm's channels were cut).
    """
    after, exc = run_once(model, inputs)
    if exc is not None:
        return f"the pruned model no longer runs: {type(exc).__name__}: {str(exc)[:200]}"
    return outputs_differ(after, want, values=values)


def _semantic(modules: list[nn.Module]) -> bool:
    return all(zeroing_equals_removal(m) for m in modules)


@torch.no_grad()
def _zeroed_reference(model: nn.Module, inputs: tuple[Any, ...], log: list[dict[str, Any]]) -> Any:
    """``model``'s output with what ``log`` removes set to zero (the model itself is put back after)."""
    zeroed = zero_removed_channels(model, log)
    try:
        out, exc = run_once(model, inputs)
    finally:
        restore_zeroed(zeroed)
    if exc is not None:
        raise RuntimeError(f"the original model with the removed channels zeroed does not run: {exc}")
    return out


def _check_still_runs(model: nn.Module, inputs: tuple[Any, ...], before: Any, unpruned: nn.Module,
                      entries: dict[str, dict[str, Any]]) -> None:
    """The pruned model must run, keep its output shapes and, where zeroing equals removal for every cut
    layer, compute what the unpruned model computes with the removed channels zeroed."""
    log = list(entries.values())
    cut = [unpruned.get_submodule(e["module"]) for e in log if "out" in e or "features" in e]
    values = _semantic(cut)
    want = _zeroed_reference(unpruned, inputs, log) if values else before
    if (why := _breakage(model, inputs, want, values)) is not None:
        raise RuntimeError(why)


class _SkipUnscorable(tp.importance.Importance):
    """Scores groups with ``inner``; a group whose scoring fails (a mis-mapped index) is left unpruned."""

    def __init__(self, inner: Any, names: dict[nn.Module, str], skipped: dict[str, str]) -> None:
        self.inner, self.names, self.skipped = inner, names, skipped

    def __call__(self, group: Any, **kwargs: Any) -> Tensor | None:
        try:
            return self.inner(group, **kwargs)
        except DeepshrinkError:
            raise
        except (IndexError, RuntimeError, ValueError, KeyError) as exc:
            name = self.names.get(group[0].dep.target.module, str(group[0].dep.target))
            self.skipped[name] = f"its group could not be scored ({type(exc).__name__}: {str(exc)[:120]}); kept whole"
            return None


def _prune_steps(model: nn.Module, config: ChannelPruning, inputs: tuple[Any, ...], data: Any, pruner: Any,
                 attention: list[Any], names: dict[nn.Module, str], before: Any,
                 report: Report, shadow: nn.Module, careful: bool = False) -> dict[str, dict[str, Any]]:
    """Torch-Pruning's steps, then the surgery log that replays them (checked on ``shadow``, a shape-only
    copy of the unpruned model).

    ``careful``: run the model after every group and put back a group that breaks it (one forward pass
    per group), and leave unpruned a group that cannot be scored. Fills ``report`` and returns the log
    entries by module name.
    """
    kept: dict[tuple[str, str], list[int]] = {}
    costs = [measure_cost(model, inputs)] if config.measure_latency else []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for _step in range(config.iterative_steps):
            if costs and _step > 0:
                costs.append(measure_cost(model, inputs))
                warn_step(costs[-2], costs[-1], _step)
            if _step > 0:  # scores of the channels that are left (data-driven criteria measure again)
                pruner.importance = build_importance(config, model, inputs, data)
            if careful:
                pruner.importance = _SkipUnscorable(pruner.importance, names, report.skipped)
            for group in pruner.step(interactive=True):
                edits: dict[tuple[str, str], set[int]] = {}
                ok = True
                for dep, idxs in group:
                    target = dep.target.module
                    if isinstance(target, nn.Parameter):
                        ok = False  # a bare parameter (e.g. a position embedding): no replay for it yet
                        continue
                    if not isinstance(target, nn.Module) or target not in names:
                        continue  # traced ops (add, concat, reshape) hold no weights
                    if not _replayable(target):
                        ok = False
                        report.skipped[names[target]] = f"{type(target).__name__} cannot be sliced by the replay; its group is kept"
                        continue
                    if not any(True for _ in target.parameters(recurse=False)):
                        continue
                    key = (names[target], _axis(target, pruner.DG.is_out_channel_pruning_fn(dep.handler)))
                    edits.setdefault(key, set()).update(int(i) for i in _plain(idxs))
                if not ok:
                    continue
                for name, axis in edits:  # sizes before this module's first cut
                    kept.setdefault((name, axis), list(range(_size(model.get_submodule(name), axis))))
                if careful:
                    # The group's removal must give what zeroing its channels gives (where that is the same
                    # thing), else at least run with the same output shapes; otherwise it is put back.
                    cut = {(name, axis): removed for (name, axis), removed in edits.items() if axis != "in"}
                    values = _semantic([model.get_submodule(name) for name, _ in cut])
                    want = before
                    if values:
                        zeroed = [z for (name, axis), removed in cut.items()
                                  for z in zero_channels(model.get_submodule(name), axis, sorted(removed))]
                        want, _ = run_once(model, inputs)
                        restore_zeroed(zeroed)
                    undo = [Rollback(model.get_submodule(name)) for name in {name for name, _ in edits}]
                    group.prune()
                    if (why := _breakage(model, inputs, want, values)) is not None:
                        for u in undo:
                            u.restore()
                        report.skipped[next(iter(edits))[0] if edits else "?"] = f"removing its group broke the model ({why[:120]}); kept whole"
                        continue
                else:
                    group.prune()
                for key, removed in edits.items():
                    kept[key] = [k for i, k in enumerate(kept[key]) if i not in removed]
    model.zero_grad(set_to_none=True)  # gradients of the old shapes mean nothing for the pruned parameters
    if costs:
        costs.append(measure_cost(model, inputs))
        text = warn_step(costs[-2], costs[-1], config.iterative_steps)
        if text:
            report.figures["warning"] = text
        report.figures.update(macs_before=costs[0]["macs"], macs_after=costs[-1]["macs"],
                              latency_ms_before=costs[0]["latency_ms"], latency_ms_after=costs[-1]["latency_ms"],
                              speedup=costs[0]["latency_ms"] / max(costs[-1]["latency_ms"], 1e-9), steps=costs)

    entries: dict[str, dict[str, Any]] = {}
    for (name, axis), idx in kept.items():
        if len(idx) < _size(shadow.get_submodule(name), axis):
            entries.setdefault(name, {"op": "channel_prune", "module": name})[axis] = idx
    order = {n: i for i, n in enumerate(names.values())}
    for name in sorted(entries, key=order.__getitem__):
        replay_channel_prune(shadow, entries[name])
        record_surgery(model, entries[name])
        report.changed.append(name)
        report.per_layer[name] = {axis: len(entries[name][axis]) for axis in ("out", "in", "features") if axis in entries[name]}
    for a in attention:
        heads = a.projections[0].out_features // a.head_dim
        if heads != a.num_heads:
            entry = {"op": "attention_heads", "module": a.name, "num_heads": heads}
            set_head_count(a.module, heads)
            replay_attention_heads(shadow, entry)
            record_surgery(model, entry)
            report.changed.append(a.name)
            report.per_layer.setdefault(a.name, {})["heads"] = heads
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in shadow.state_dict().items()}
    if want != got:
        bad = sorted(k for k in want if want[k] != got.get(k))
        raise RuntimeError(f"channel pruning produced shapes the surgery log cannot rebuild: {bad[:5]}")
    return entries


__all__: Sequence[str] = ["ChannelPruning", "NothingPrunedWarning", "channel_prune", "replay_channel_prune"]
