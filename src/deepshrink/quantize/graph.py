"""Whole-graph integer models: torch FX quantization, re-expressed with plain-tensor layers.

torch's FX pass (``prepare_fx`` / ``convert_fx``, x86 backend) does the graph
work that makes int8 fast: it folds batch norms into convolutions, fuses ReLUs,
keeps activations quantized between layers and turns residual additions into
``quantized.add``. We then swap its quantized layers for
:mod:`.int8_modules` layers, whose state is plain int8/float tensors, and put
the graph inside the user's model object (``model.int8_graph``) with the
model's ``forward`` delegating to it, so that ``quantize_`` works in place.

Rebuilding from a file (:func:`rebuild_graph`) runs the same pass on the base
model with placeholder ranges; the file's tensors then overwrite every value.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    >>> x = torch.randn(2, 1, 8, 8)
    >>> q = build_graph(m, [(x,)], per_channel=True, reduce_range=False, observer="minmax", weight_bits=8)
    >>> install_graph(m, q)
    >>> m(x).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import types
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .int8_modules import Int8Conv, Int8Linear
from ..surgery import set_module

GRAPH_ATTR = "int8_graph"

# Layers without an integer counterpart here stay float (the pass puts dequantize/quantize around them).
_FLOAT_TYPES: tuple[Any, ...] = (
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.LayerNorm, nn.GroupNorm, nn.PReLU,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.Embedding, nn.EmbeddingBag,
    nn.LSTM, nn.GRU, nn.RNN, nn.MultiheadAttention,
)
# Functional layers would become packed constants outside the state dict: they stay float.
_FLOAT_FUNCTIONS: tuple[Any, ...] = (
    torch.nn.functional.linear, torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d,
    torch.nn.functional.conv_transpose1d, torch.nn.functional.conv_transpose2d, torch.nn.functional.conv_transpose3d,
    torch.nn.functional.layer_norm, torch.nn.functional.embedding,
)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence torch.ao.quantization's deprecation notices (it points to torchao; its kernels are current).

    Example:
        >>> with quiet():
        ...     pass
    """
    import torch.fx.config

    # Stack traces per traced node only help debugging and cost seconds (their first use imports
    # most of torch); the patch is undone on exit.
    before = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.fx.config.do_not_emit_stack_traces = before


def qconfig(*, per_channel: bool, reduce_range: bool, observer: str, weight_bits: int, qat: bool) -> Any:
    """The QConfig: quint8 activations (calibrated or fake-quantized), symmetric qint8 weight codes.

    Example:
        >>> qc = qconfig(per_channel=True, reduce_range=False, observer="minmax", weight_bits=4, qat=False)
        >>> qc.weight().quant_max
        7
    """
    from torch.ao.quantization import (
        FakeQuantize,
        HistogramObserver,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
    )

    qmin, qmax = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    amax = 127 if reduce_range else 255
    scheme = torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric
    if qat:
        act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=amax,
                                     dtype=torch.quint8, reduce_range=False)
        wobs = MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
        extra = {"ch_axis": 0} if per_channel else {}
        weight = FakeQuantize.with_args(observer=wobs, quant_min=qmin, quant_max=qmax, dtype=torch.qint8,
                                        qscheme=scheme, **extra)
    else:
        obs = HistogramObserver if observer == "histogram" else MinMaxObserver
        act = obs.with_args(dtype=torch.quint8, quant_min=0, quant_max=amax)
        wobs = PerChannelMinMaxObserver if per_channel else MinMaxObserver
        weight = wobs.with_args(dtype=torch.qint8, qscheme=scheme, quant_min=qmin, quant_max=qmax)
    return QConfig(activation=act, weight=weight)


def qconfig_mapping(model: nn.Module, qc: Any, *, exclude: Sequence[str] = (), qat: bool = False) -> Any:
    """torch's x86 mapping with ``qc`` as default, unsupported layers and ``exclude`` patterns left float.

    Example:
        >>> from torch import nn
        >>> qc = qconfig(per_channel=True, reduce_range=False, observer="minmax", weight_bits=8, qat=False)
        >>> dict(qconfig_mapping(nn.Sequential(nn.Linear(2, 2)), qc, exclude=["0"]).module_name_qconfigs)
        {'0': None}
    """
    from torch.ao.quantization import FixedQParamsFakeQuantize, QConfig, QConfigMapping, default_reuse_input_qconfig
    from torch.ao.quantization.qconfig_mapping import _FIXED_QPARAMS_OP_TO_OBSERVER

    mapping = QConfigMapping().set_global(qc).set_object_type("reshape", default_reuse_input_qconfig)
    for op, obs in _FIXED_QPARAMS_OP_TO_OBSERVER.items():
        act = FixedQParamsFakeQuantize.with_args(observer=obs) if qat else obs
        mapping.set_object_type(op, QConfig(activation=act, weight=qc.weight))
    for kind in (*_FLOAT_TYPES, *_FLOAT_FUNCTIONS):
        mapping.set_object_type(kind, None)
    for name, _ in model.named_modules():
        if name and any(fnmatch.fnmatchcase(name, p) for p in exclude):
            mapping.set_module_name(name, None)
    return mapping


def _example(batch: Any) -> tuple[Any, ...]:
    return tuple(batch) if isinstance(batch, (list, tuple)) else (batch,)


def prepare(model: nn.Module, example: tuple[Any, ...], mapping: Any, *, qat: bool) -> nn.Module:
    """FX-trace ``model`` and insert observers (or fake quantizers for QAT); ``model`` is not changed.

    Raises whatever torch.fx raises for a model it cannot trace (data-dependent control flow).
    """
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    work = copy.deepcopy(model)
    with quiet():
        if qat:
            # Traced in eval mode, then set to train: tracing bakes ``self.training`` into functional calls
            # (torchvision's stochastic_depth, F.dropout) and train-only branches, and a graph traced in train
            # mode would keep dropping paths at inference after conversion (and differ from the graph the
            # file loader rebuilds, which is traced in eval mode). Modules (batch norms, nn.Dropout) still
            # follow train/eval at run time.
            return prepare_qat_fx(work.eval(), mapping, example).train()
        return prepare_fx(work.eval(), mapping, example)


def convert(prepared: nn.Module, *, weight_bits: int) -> nn.Module:
    """``convert_fx`` then swap torch's quantized layers for plain-tensor ones; checks nothing opaque is left."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet():
        q = convert_fx(prepared.eval())
    swap_torch_layers(q, weight_bits=weight_bits)
    for name, module in q.named_modules():
        for key, value in vars(module).items():
            if isinstance(value, torch.ScriptObject):
                raise TypeError(f"{name or 'model'}.{key}: an opaque packed constant is left after conversion; "
                                "exclude that layer from int8")
        for key, t in list(module.named_buffers(recurse=False)) + list(module.named_parameters(recurse=False)):
            if t is not None and t.is_quantized:
                raise TypeError(f"{name}.{key}: {type(module).__name__} has no plain-tensor int8 layer here; exclude it")
    return q


def build_graph(model: nn.Module, batches: Iterable[Any], *, per_channel: bool, reduce_range: bool, observer: str,
                weight_bits: int, exclude: Sequence[str] = ()) -> nn.Module:
    """Post-training static quantization of the whole graph, calibrated on ``batches`` (model inputs).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
        >>> q = build_graph(m, [torch.randn(8, 4)], per_channel=True, reduce_range=False, observer="minmax", weight_bits=8)
        >>> type(q.get_submodule("0")).__name__
        'Int8Linear'
    """
    batches = list(batches)
    if not batches:
        raise ValueError("static int8 needs at least one calibration batch")
    qc = qconfig(per_channel=per_channel, reduce_range=reduce_range, observer=observer, weight_bits=weight_bits, qat=False)
    prepared = prepare(model, _example(batches[0]), qconfig_mapping(model, qc, exclude=exclude), qat=False)
    with torch.no_grad():
        for batch in batches:
            prepared(*_example(batch))
    return convert(prepared, weight_bits=weight_bits)


def swap_torch_layers(root: nn.Module, *, weight_bits: int) -> int:
    """Replace torch's quantized Linear/Conv (and fused ReLU variants) by :mod:`.int8_modules` layers.

    Example:
        >>> swap_torch_layers(nn.Sequential(nn.Linear(2, 2)), weight_bits=8)
        0
    """
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    relu_types = (nniq.LinearReLU, nniq.ConvReLU1d, nniq.ConvReLU2d, nniq.ConvReLU3d)
    conv_dims = {nnq.Conv1d: 1, nnq.Conv2d: 2, nnq.Conv3d: 3}
    swaps = []
    for name, module in root.named_modules():
        if isinstance(module, nnq.Linear) and type(module).__name__ in ("Linear", "LinearReLU"):
            w = module.weight()
            new: nn.Module = Int8Linear(module.in_features, module.out_features, module.bias() is not None,
                                        relu=isinstance(module, relu_types), per_channel=_per_channel(w),
                                        weight_bits=weight_bits)
        elif any(isinstance(module, t) for t in conv_dims) and not isinstance(module, nnq.ConvTranspose1d):
            if module.padding_mode != "zeros":
                raise TypeError(f"{name}: int8 convolutions here pad with zeros only (padding_mode={module.padding_mode!r})")
            w = module.weight()
            dims = next(d for t, d in conv_dims.items() if isinstance(module, t))
            new = Int8Conv(dims, module.in_channels, module.out_channels, tuple(module.kernel_size),
                           stride=tuple(module.stride), padding=tuple(module.padding), dilation=tuple(module.dilation),
                           groups=module.groups, bias=module.bias() is not None, relu=isinstance(module, relu_types),
                           per_channel=_per_channel(w), weight_bits=weight_bits)
        else:
            continue
        _copy_quantized(new, module, w)
        swaps.append((name, new))
    for name, new in swaps:
        set_module(root, name, new)
    return len(swaps)


def _per_channel(w: torch.Tensor) -> bool:
    return w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)


def _copy_quantized(new: Any, module: Any, w: torch.Tensor) -> None:
    if _per_channel(w):
        scale, zp = w.q_per_channel_scales().float(), w.q_per_channel_zero_points().to(torch.int32)
    else:
        scale, zp = torch.tensor(w.q_scale(), dtype=torch.float32), torch.tensor(w.q_zero_point(), dtype=torch.int32)
    bias = module.bias()
    # torch rounds into the full int8 range on conversion; training (fake quantization) clamped to the
    # layer's own range, e.g. [-8, 7] for 4 bits, so the integer model clamps the same way.
    qmin, qmax = -(1 << (new.weight_bits - 1)), (1 << (new.weight_bits - 1)) - 1
    new.set_weight(w.int_repr().clamp(qmin, qmax), scale, zp, None if bias is None else bias.detach().float())
    with torch.no_grad():
        new.scale.fill_(float(module.scale))
        new.zero_point.fill_(int(module.zero_point))
    new.invalidate()


def _delegate(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    return getattr(self, GRAPH_ATTR)(*args, **kwargs)


def install_graph(model: nn.Module, graph: nn.Module) -> None:
    """Make ``model`` (the same object) run ``graph``: its own layers are dropped, ``forward`` delegates.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(2, 2))
        >>> install_graph(m, nn.Identity())
        >>> list(m.state_dict()), m(torch.ones(1)).tolist()
        ([], [1.0])
    """
    for name in list(model._modules):
        del model._modules[name]
    for name in list(model._parameters):
        del model._parameters[name]
    for name in list(model._buffers):
        del model._buffers[name]
    model.add_module(GRAPH_ATTR, graph)
    object.__setattr__(model, "forward", types.MethodType(_delegate, model))
    model.train(False)


def graph_of(model: nn.Module) -> nn.Module | None:
    """The installed graph of a model quantized in graph mode, or None.

    Example:
        >>> graph_of(nn.Linear(2, 2)) is None
        True
    """
    graph = model._modules.get(GRAPH_ATTR)
    return graph if graph is not None and "forward" in vars(model) else None


def rebuild_graph(model: nn.Module, inputs: list[tuple[str, list[int]]], *, per_channel: bool, reduce_range: bool,
                  weight_bits: int, exclude: Sequence[str], max_bytes: int) -> None:
    """Rebuild the structure of a graph-mode int8 model on its base model (file loading).

    On the meta device (the loader's shape probe) the base model is first
    materialised on the CPU, refusing more than ``max_bytes`` of float tensors.
    """
    params = list(model.parameters()) + list(model.buffers())
    on_meta = any(t.is_meta for t in params)
    if on_meta:
        nbytes = sum(t.numel() * t.element_size() for t in params)
        if nbytes > max_bytes:
            raise ValueError(f"the base model needs {nbytes} bytes, more than the limit {max_bytes}")
    with torch.device("cpu"):
        work = copy.deepcopy(model)
        if on_meta:
            work = work.to_empty(device="cpu")
            with torch.no_grad():
                for t in list(work.parameters()) + list(work.buffers()):
                    t.zero_() if t.is_floating_point() else t.fill_(0)
        example = tuple(torch.zeros(shape, dtype=getattr(torch, dtype)) for dtype, shape in inputs)
        qc = qconfig(per_channel=per_channel, reduce_range=reduce_range, observer="minmax", weight_bits=weight_bits, qat=False)
        prepared = prepare(work, example, qconfig_mapping(work, qc, exclude=exclude), qat=False)
        from torch.ao.quantization.observer import MinMaxObserver

        for module in prepared.modules():
            if isinstance(module, MinMaxObserver):  # placeholder range; the file holds the real qparams
                module.min_val = torch.tensor(-1.0)
                module.max_val = torch.tensor(1.0)
        graph = convert(prepared, weight_bits=weight_bits)
    install_graph(model, graph)
