"""Linear int8 quantization that computes in int8: ``quantize_(model, Int8(...), calibration=...)``.

- ``activations="static"``: post-training quantization calibrated on data.
  ``mode="graph"`` quantizes the whole traced graph with torch's x86 FX pass
  (batch norms folded, ReLUs fused, activations stay int8 between layers,
  residual additions in int8; :mod:`.graph`); ``mode="layers"`` gives each
  Linear/Conv its own calibrated input quantization and dequantized output, for
  models torch.fx cannot trace; ``"auto"`` tries the graph first.
- ``activations="dynamic"``: int8 weights, activations quantized per call
  (:class:`~.int8_modules.DynamicInt8Linear`), for linear-heavy models such as
  transformers. No calibration.

Every variant records a surgery entry (``int8_graph``, ``int8_layers``,
``int8_dynamic``) so that a saved model rebuilds from its base factory; its
tensors are int8 codes plus per-channel scales and zero points.

Example:
    >>> import torch, deepshrink as ds
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    >>> calib = [torch.rand(8, 1, 8, 8) for _ in range(2)]
    >>> report = ds.quantize_(model, ds.Int8(observer="minmax"), calibration=calib)
    >>> report.figures["mode"], type(model.int8_graph.get_submodule("0")).__name__
    ('graph', 'Int8Conv')
"""

from __future__ import annotations

import contextlib
import io

import fnmatch
import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config, check_choice, check_range, register_config
from ..dispatch import Report, quantize_
from ..errors import ConfigError
from ..models.inputs import forward_error
from ..surgery import record_surgery, register_surgery, set_module
from .graph import build_graph, install_graph, rebuild_graph
from .int8_modules import DynamicInt8Linear, Int8Conv, Int8Linear, IntegerLayer, quantize_weight

WEIGHT_SCHEMES = ("per_channel", "per_tensor")
ACTIVATIONS = ("static", "dynamic")
OBSERVERS = ("histogram", "minmax")
MODES = ("auto", "graph", "layers")
_MAX_REBUILD_BYTES = 8 << 30  # the loader's default cap on decoded tensors


def default_reduce_range() -> bool:
    """Whether activations keep 7 bits: only on x86 CPUs without VNNI, where 8-bit products can saturate.

    Example:
        >>> isinstance(default_reduce_range(), bool)
        True
    """
    try:
        return not bool(torch.cpu._is_vnni_supported())
    except AttributeError:  # an older torch: stay on the safe side
        return True


@register_config("int8")
@dataclass(frozen=True)
class Int8(Config):
    """Linear int8 quantization: int8 weight codes with per-channel (or per-tensor) scales.

    Fields:
        weights: ``"per_channel"`` (a scale per output channel) or ``"per_tensor"``.
        activations: ``"static"`` (calibrated, whole model in int8) or ``"dynamic"``
            (Linear layers only, activation ranges measured per call).
        observer: how static calibration picks activation ranges: ``"histogram"``
            (least squared error, torch's default) or ``"minmax"``.
        calibration_batches: at most this many calibration batches are used.
        batch_size: batch size when calibration batches are drawn from ``data=``.
        mode: ``"graph"``, ``"layers"`` or ``"auto"`` (graph when the model traces).
        reduce_range: 7-bit activations; None decides by the CPU (True without VNNI).
        include, exclude: fnmatch patterns on layer names (``include`` selects
            single layers, so it implies per-layer mode for static int8).

    Example:
        >>> Int8(activations="dynamic").weights
        'per_channel'
        >>> Int8(weights="per_row")
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: Int8.weights='per_row' is invalid: expected one of 'per_channel', 'per_tensor'
    """

    weights: str = "per_channel"
    activations: str = "static"
    observer: str = "histogram"
    calibration_batches: int = 16
    batch_size: int = 32
    mode: str = "auto"
    reduce_range: bool | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def validate(self) -> None:
        check_choice(self, "weights", WEIGHT_SCHEMES)
        check_choice(self, "activations", ACTIVATIONS)
        check_choice(self, "observer", OBSERVERS)
        check_range(self, "calibration_batches", 1, None, integer=True)
        check_range(self, "batch_size", 1, None, integer=True)
        check_choice(self, "mode", MODES)
        if self.reduce_range is not None and not isinstance(self.reduce_range, bool):
            raise ConfigError("reduce_range", self.reduce_range, "true, false or null (decide by the CPU)", "Int8")
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise ConfigError(name, value, "a list of layer-name patterns such as ['fc*']", "Int8")
        if self.include and self.mode == "graph":
            raise ConfigError("include", self.include, "no include patterns in mode='graph' (the whole graph is "
                              "quantized; leave layers out with exclude, or use mode='layers')", "Int8")


# --------------------------------------------------------------------------- calibration data


def calibration_batches(model: nn.Module, calibration: Any, data: Any, *, batches: int, batch_size: int) -> list[tuple[Any, ...]]:
    """Up to ``batches`` model-input tuples from ``calibration`` (an iterable of batches or a Dataset) or ``data.train``.

    Classification batches ``(x, y)`` give ``(x,)``; sentences are tokenized
    with the model's tokenizer (text models such as minilm).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> len(calibration_batches(nn.Linear(2, 2), [torch.zeros(4, 2)] * 5, None, batches=3, batch_size=8))
        3
    """
    source: Any = calibration
    text = False
    if source is None and data is not None:
        source = data.train
        text = getattr(data, "task", "classification") == "text"
    if source is None:
        raise ConfigError("calibration", None, "calibration batches (calibration=[x, ...] or a DataLoader) or data=DataBundle "
                          "for static int8; or use Int8(activations='dynamic')", "Int8")
    if isinstance(source, torch.utils.data.Dataset) and not isinstance(source, torch.utils.data.IterableDataset):
        if text or (len(source) and isinstance(source[0], str)):  # type: ignore[arg-type]
            tokenize = getattr(model, "tokenize", None)
            if tokenize is None:
                raise ConfigError("calibration", "sentences", "a model with a tokenize() method for text calibration data", "Int8")
            n = min(len(source), batches * batch_size)  # type: ignore[arg-type]
            picked = torch.randperm(len(source), generator=torch.Generator().manual_seed(0))[:n].tolist()  # type: ignore[arg-type]
            out = []
            for i in range(0, n, batch_size):
                b = tokenize([source[j] for j in picked[i : i + batch_size]])
                out.append((b["input_ids"], b["attention_mask"]))
            return out
        # A seeded random draw, not the first items: a split grouped by class would calibrate on one class.
        source = torch.utils.data.DataLoader(source, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    out = []
    for batch in itertools.islice(iter(source), batches):
        if isinstance(batch, Tensor):
            out.append((batch,))
        elif isinstance(batch, dict):
            out.append(tuple(batch.values()))
        elif isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
            # (inputs, labels) pairs: the labels are not model inputs
            out.append((batch[0],) if len(batch) == 2 and batch[1].dtype in (torch.int64, torch.int32) else tuple(batch))
        else:
            raise ConfigError("calibration", type(batch).__name__, "batches of tensors, (x, y) pairs or dicts of tensors", "Int8")
    if not out:
        raise ConfigError("calibration", "empty", "at least one calibration batch", "Int8")
    return out


# --------------------------------------------------------------------------- selection helpers


def _selected(name: str, cfg: Int8) -> bool:
    if cfg.include and not any(fnmatch.fnmatchcase(name, p) for p in cfg.include):
        return False
    return not (cfg.exclude and any(fnmatch.fnmatchcase(name, p) for p in cfg.exclude))


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.padding_mode == "zeros" and isinstance(m.padding, tuple)


def _input_signature(batch: tuple[Any, ...]) -> list[list[Any]]:
    return [[str(t.dtype).replace("torch.", ""), list(t.shape)] for t in batch]


# --------------------------------------------------------------------------- handlers


@quantize_.register(Int8)
def int8_quantize(model: nn.Module, config: Int8, *, calibration: Any = None, data: Any = None,
                  example_inputs: Any = None, **_: Any) -> Report:
    """Handler of ``quantize_`` for :class:`Int8` (see the module docstring).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> int8_quantize(m, Int8(activations="dynamic")).changed
        ['0', '2']
    """
    from torch.nn.utils import parametrize

    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("model", "a model with masks or codebooks", "a plain model: fold masks/sharing first", "Int8")
    if any(isinstance(m, IntegerLayer) for m in model.modules()):
        raise ConfigError("model", "an int8 model", "a float model (this one is already quantized)", "Int8")
    if any(t.device.type != "cpu" for t in list(model.parameters()) + list(model.buffers())):
        raise ConfigError("model", "a model off the CPU", "a CPU model: the int8 kernels (x86 FBGEMM/oneDNN) run on "
                          "the CPU; call model.cpu() first", "Int8")
    reduce_range = default_reduce_range() if config.reduce_range is None else config.reduce_range
    per_channel = config.weights == "per_channel"
    if config.activations == "dynamic":
        probe = _probe_inputs(example_inputs, calibration)
        return _dynamic(model, config, per_channel, reduce_range, probe)
    batches = calibration_batches(model, calibration, data, batches=config.calibration_batches, batch_size=config.batch_size)
    model.eval()
    if config.mode in ("graph", "auto") and not config.include:
        try:
            # torch.fx prints the failing line of generated code to stderr before raising; the error is
            # reported (fallback or ConfigError) instead.
            with contextlib.redirect_stderr(io.StringIO()):
                graph = build_graph(model, batches, per_channel=per_channel, reduce_range=reduce_range,
                                    observer=config.observer, weight_bits=8, exclude=config.exclude)
            # A graph can convert and still fail when run: torch's quantized kernels do not cover every op
            # on every layout (ShuffleNetV2's channel shuffle: "required rank 4 tensor to use channels_last
            # format"). Run it once, so that such a model falls back to per-layer int8 instead of breaking later.
            if (error := forward_error(graph, tuple(batches[0]))) is not None:
                raise error
        except Exception as exc:  # noqa: BLE001 - torch.fx raises many kinds of error for untraceable code
            if config.mode == "graph":
                raise ConfigError("mode", "graph", f"a model torch.fx can trace ({type(exc).__name__}: {exc}); "
                                  "use mode='layers'", "Int8") from None
            fallback = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            report = Report(method="int8_static")
            layers = [n for n, m in graph.named_modules() if isinstance(m, IntegerLayer)]
            install_graph(model, graph)
            record_surgery(model, {"op": "int8_graph", "per_channel": per_channel, "reduce_range": reduce_range,
                                   "weight_bits": 8, "exclude": list(config.exclude),
                                   "inputs": _input_signature(batches[0])})
            report.changed = layers
            report.figures.update({"mode": "graph", "layers": len(layers), "reduce_range": reduce_range})
            return report
    else:
        fallback = None
    report = _layers(model, config, batches, per_channel, reduce_range)
    if fallback is not None:
        report.figures["graph_fallback"] = fallback
    return report


def _probe_inputs(example_inputs: Any, calibration: Any) -> tuple[Any, ...] | None:
    """Inputs to check that the model still runs after its layers are swapped: the example inputs, else a
    first calibration batch of tensors, else None (no check)."""
    source = example_inputs
    if source is None and isinstance(calibration, (list, tuple)) and calibration:
        source = calibration[0]
    if isinstance(source, Tensor):
        return (source,)
    if isinstance(source, (list, tuple)) and source and all(isinstance(t, Tensor) for t in source):
        return tuple(source)
    return None


def _dynamic(model: nn.Module, cfg: Int8, per_channel: bool, reduce_range: bool,
             probe: tuple[Any, ...] | None = None) -> Report:
    report = Report(method="int8_dynamic")
    names = []
    originals: dict[str, nn.Module] = {}
    for name, m in list(model.named_modules()):
        if not name or not _selected(name, cfg):
            continue
        if type(m) is nn.Linear:
            set_module(model, name, DynamicInt8Linear.from_float(m, per_channel=per_channel, reduce_range=reduce_range))
            names.append(name)
            originals[name] = m
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            report.skipped[name] = "dynamic int8 covers Linear layers; use activations='static' for convolutions"
    if probe is not None and names and forward_error(model, probe) is not None:
        # Some parent reads a layer's weight directly (Swin's window attention passes qkv.weight to a
        # functional kernel): find those layers one by one and keep them in float.
        swapped = {n: model.get_submodule(n) for n in names}
        for n in names:
            set_module(model, n, originals[n])
        for n in names:
            set_module(model, n, swapped[n])
            if forward_error(model, probe) is not None:
                set_module(model, n, originals[n])
                report.skipped[n] = "kept in float: the model does not run with it swapped (its parent reads its weight directly)"
        names = [n for n in names if n not in report.skipped]
    if names:
        record_surgery(model, {"op": "int8_dynamic", "modules": names, "per_channel": per_channel,
                               "reduce_range": reduce_range, "weight_bits": 8})
    report.changed = names
    report.figures.update({"mode": "dynamic", "layers": len(names), "reduce_range": reduce_range})
    return report


def _layers(model: nn.Module, cfg: Int8, batches: list[tuple[Any, ...]], per_channel: bool, reduce_range: bool) -> Report:
    """Each selected Linear/Conv quantizes its own input (calibrated) and dequantizes its output."""
    from torch.ao.quantization import HistogramObserver, MinMaxObserver

    from .graph import quiet

    report = Report(method="int8_static")
    targets = [(n, m) for n, m in model.named_modules() if n and _selected(n, cfg) and (type(m) is nn.Linear or _is_conv(m))]
    obs_cls = HistogramObserver if cfg.observer == "histogram" else MinMaxObserver
    qmax = 127 if reduce_range else 255
    with quiet():
        observers = {n: (obs_cls(dtype=torch.quint8, quant_min=0, quant_max=qmax),
                         obs_cls(dtype=torch.quint8, quant_min=0, quant_max=qmax)) for n, _ in targets}
    hooks = []
    for name, m in targets:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Tensor, name: str = name) -> None:
            observers[name][0](args[0].detach().float())
            observers[name][1](out.detach().float())

        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for batch in batches:
                model(*batch)
    finally:
        for h in hooks:
            h.remove()
    for name, m in targets:
        layer = int8_layer_like(m, per_channel=per_channel, weight_bits=8)
        codes, scale, zp = quantize_weight(m.weight, per_channel=per_channel)
        layer.set_weight(codes, scale, zp, None if m.bias is None else m.bias.detach().float())
        with quiet():
            in_s, in_z = observers[name][0].calculate_qparams()
            out_s, out_z = observers[name][1].calculate_qparams()
        with torch.no_grad():
            layer.input_scale.fill_(float(in_s)), layer.input_zero_point.fill_(int(in_z))
            layer.scale.fill_(float(out_s)), layer.zero_point.fill_(int(out_z))
        layer.invalidate()
        set_module(model, name, layer)
        report.changed.append(name)
    if report.changed:
        record_surgery(model, {"op": "int8_layers", "modules": report.changed, "per_channel": per_channel, "weight_bits": 8})
    report.figures.update({"mode": "layers", "layers": len(report.changed), "reduce_range": reduce_range})
    return report


def int8_layer_like(m: nn.Module, *, per_channel: bool, weight_bits: int) -> Int8Linear | Int8Conv:
    """An empty float-in/float-out int8 layer with the shape of ``m`` (on its device, meta included).

    Example:
        >>> int8_layer_like(nn.Conv2d(3, 8, 3, padding=1), per_channel=True, weight_bits=8).padding
        (1, 1)
    """
    device = m.weight.device
    if type(m) is nn.Linear:
        return Int8Linear(m.in_features, m.out_features, m.bias is not None, float_io=True, per_channel=per_channel,
                          weight_bits=weight_bits, device=device)
    if _is_conv(m):
        dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(m)]
        return Int8Conv(dims, m.in_channels, m.out_channels, tuple(m.kernel_size), stride=tuple(m.stride),
                        padding=tuple(m.padding), dilation=tuple(m.dilation), groups=m.groups, bias=m.bias is not None,
                        float_io=True, per_channel=per_channel, weight_bits=weight_bits, device=device)
    raise ValueError(f"{type(m).__name__} has no int8 layer here (Linear, Conv1d/2d/3d with zero padding)")


# --------------------------------------------------------------------------- replay (file loading)


def _flag(entry: dict[str, Any], key: str) -> bool:
    value = entry.get(key)
    if not isinstance(value, bool):
        raise ValueError(f"{key!r} must be true or false")
    return value


def _bits(entry: dict[str, Any]) -> int:
    bits = entry.get("weight_bits")
    if type(bits) is not int or not 2 <= bits <= 8:
        raise ValueError("'weight_bits' must be an integer from 2 to 8")
    return bits


def _names(entry: dict[str, Any]) -> list[str]:
    names = entry.get("modules")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError("'modules' must be a list of module names")
    return names


def _check_keys(entry: dict[str, Any], allowed: set[str]) -> None:
    extra = set(entry) - allowed - {"op"}
    if extra:
        raise ValueError(f"unknown keys {sorted(extra)}")


@register_surgery("int8_dynamic")
def replay_int8_dynamic(model: nn.Module, entry: dict[str, Any]) -> None:
    """Swap the named Linear layers for empty dynamic int8 layers (the file fills them).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 2))
        >>> replay_int8_dynamic(m, {"op": "int8_dynamic", "modules": ["0"], "per_channel": True,
        ...                         "reduce_range": False, "weight_bits": 8})
        >>> type(m[0]).__name__
        'DynamicInt8Linear'
    """
    _check_keys(entry, {"modules", "per_channel", "reduce_range", "weight_bits"})
    per_channel, reduce_range, bits = _flag(entry, "per_channel"), _flag(entry, "reduce_range"), _bits(entry)
    for name in _names(entry):
        m = model.get_submodule(name)
        if type(m) is not nn.Linear:
            raise ValueError(f"{name!r} is a {type(m).__name__}, not a Linear layer")
        layer = DynamicInt8Linear(m.in_features, m.out_features, m.bias is not None, per_channel=per_channel,
                                  reduce_range=reduce_range, weight_bits=bits, device=m.weight.device)
        set_module(model, name, layer)


@register_surgery("int8_layers")
def replay_int8_layers(model: nn.Module, entry: dict[str, Any]) -> None:
    """Swap the named Linear/Conv layers for empty float-in/float-out int8 layers.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(1, 2, 3))
        >>> replay_int8_layers(m, {"op": "int8_layers", "modules": ["0"], "per_channel": True, "weight_bits": 8})
        >>> type(m[0]).__name__
        'Int8Conv'
    """
    _check_keys(entry, {"modules", "per_channel", "weight_bits"})
    per_channel, bits = _flag(entry, "per_channel"), _bits(entry)
    for name in _names(entry):
        set_module(model, name, int8_layer_like(model.get_submodule(name), per_channel=per_channel, weight_bits=bits))


@register_surgery("int8_graph")
def replay_int8_graph(model: nn.Module, entry: dict[str, Any]) -> None:
    """Rebuild a graph-mode int8 model from its base model (values come from the file).

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet5")
        >>> replay_int8_graph(m, {"op": "int8_graph", "per_channel": True, "reduce_range": False, "weight_bits": 8,
        ...                       "exclude": [], "inputs": [["float32", [1, 1, 28, 28]]]})
        >>> type(m.int8_graph.fc1).__name__
        'Int8Linear'
    """
    _check_keys(entry, {"per_channel", "reduce_range", "weight_bits", "exclude", "inputs"})
    inputs = entry.get("inputs")
    ok_dtypes = {"float32", "float16", "bfloat16", "float64", "int64", "int32"}
    if (not isinstance(inputs, list) or not 1 <= len(inputs) <= 16 or not all(
            isinstance(i, list) and len(i) == 2 and i[0] in ok_dtypes and isinstance(i[1], list) and len(i[1]) <= 8
            and all(type(d) is int and 1 <= d <= 4096 for d in i[1]) for i in inputs)):
        raise ValueError("'inputs' must list [dtype, shape] of each model input (small shapes)")
    exclude = entry.get("exclude")
    if not isinstance(exclude, list) or not all(isinstance(p, str) for p in exclude):
        raise ValueError("'exclude' must be a list of name patterns")
    # Example inputs only steer tracing: one item of each input is enough.
    shapes = [(dtype, [1, *shape[1:]] if shape else shape) for dtype, shape in inputs]
    rebuild_graph(model, shapes, per_channel=_flag(entry, "per_channel"), reduce_range=_flag(entry, "reduce_range"),
                  weight_bits=_bits(entry), exclude=exclude, max_bytes=_MAX_REBUILD_BYTES)
