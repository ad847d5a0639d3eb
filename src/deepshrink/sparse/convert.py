"""``to_sparse_``: swap in the sparse form of each layer where a measurement shows it faster.

Every Linear and Conv2d whose weight is at most ``max_density`` nonzero is a
candidate. The model runs once on ``example_inputs`` to capture each layer's
real input; then the dense layer and its sparse form run on that input in
alternating rounds (so background load hits both alike), and the sparse form
replaces the layer only when its median speed-up reaches ``min_speedup``.
Layers where dense wins stay dense, so the converted model is never slower
than the dense one (up to measurement noise, which ``min_speedup > 1``
guards against).

Each swap is recorded in the model's surgery log as ``{"op": "sparse_layer"}``.
A saved .dsz keeps the plain dense architecture (the layers' state dicts are
the dense weights); ``deepshrink.load(path, sparse=True)`` swaps the recorded
layers back in, or measures afresh when the file records none.

Example:
    >>> import torch, deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> _ = ds.prune_(model, ds.MagnitudePruning(sparsity=0.98))
    >>> report = to_sparse_(model, example_inputs=(torch.rand(1, 1, 28, 28),))  # doctest: +SKIP
    >>> sorted(report.per_layer)  # doctest: +SKIP
    ['fc1', 'fc2', 'fc3']
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..dispatch import Report
from ..errors import ConfigError
from ..surgery import record_surgery, register_surgery, set_module, surgery_log
from .layers import SparseConv2d, SparseLinear

OP = "sparse_layer"


@register_surgery(OP)
def _replay_sparse_layer(model: nn.Module, entry: dict[str, Any]) -> None:
    # Structure is unchanged (a sparse layer stores the dense weight's keys): a plain load keeps
    # the layer dense; load(..., sparse=True) reads the entry and swaps the sparse form in.
    if not isinstance(entry.get("module"), str):
        raise ValueError("a sparse_layer entry needs a 'module' name")
    layer = model.get_submodule(entry["module"])
    if not isinstance(layer, (nn.Linear, nn.Conv2d, SparseLinear, SparseConv2d)):
        raise ValueError(f"sparse_layer names {entry['module']!r}, a {type(layer).__name__}, not a Linear or Conv2d")


def sparse_form(layer: nn.Module) -> nn.Module:
    """The sparse counterpart of a Linear or Conv2d layer; ValueError when it has none.

    Example:
        >>> type(sparse_form(torch.nn.Linear(3, 2))).__name__
        'SparseLinear'
    """
    if isinstance(layer, nn.Linear):
        return SparseLinear.from_dense(layer)
    if isinstance(layer, nn.Conv2d):
        return SparseConv2d.from_dense(layer)
    raise ValueError(f"{type(layer).__name__} has no sparse form (Linear and Conv2d do)")


def _weight_density(layer: nn.Module) -> float:
    w = layer.weight.detach()
    return float((w != 0).sum()) / max(1, w.numel())


def _median_time(fn: Callable[[], Any], min_seconds: float) -> float:
    # Repeat a call until it has run for at least min_seconds; the time of one call.
    n, elapsed = 1, 0.0
    while True:
        t = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - t
        if elapsed >= min_seconds or n >= 1 << 16:
            return elapsed / n
        n *= 2


def compare_speed(dense: Callable[[], Any], sparse: Callable[[], Any], *, rounds: int = 7,
                  min_seconds: float = 0.005) -> dict[str, float]:
    """Median time of each contender over alternating rounds, and the median per-round speed-up.

    Example:
        >>> r = compare_speed(lambda: sum(range(100)), lambda: sum(range(10)), rounds=3, min_seconds=0.0005)
        >>> r["speedup"] > 1.0
        True
    """
    dense(), sparse()  # warm-up (numba compiles on first use)
    dt, st, ratios = [], [], []
    for _ in range(rounds):
        a = _median_time(dense, min_seconds)
        b = _median_time(sparse, min_seconds)
        dt.append(a)
        st.append(b)
        ratios.append(a / b if b > 0 else float("inf"))
    return {"dense_ms": 1e3 * statistics.median(dt), "sparse_ms": 1e3 * statistics.median(st),
            "speedup": statistics.median(ratios)}


def _capture_inputs(model: nn.Module, names: Sequence[str], example_inputs: tuple[Any, ...]) -> dict[str, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        def hook(_: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            if name not in captured and args and isinstance(args[0], torch.Tensor):
                captured[name] = args[0].detach().clone()
        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    return captured


def to_sparse_(
    model: nn.Module,
    example_inputs: Sequence[Any] | None = None,
    *,
    min_speedup: float = 1.1,
    max_density: float = 0.5,
    rounds: int = 7,
) -> Report:
    """Replace each Linear/Conv2d by its sparse form where that measures faster on ``example_inputs``.

    ``example_inputs`` is the tuple given to ``model(*example_inputs)`` (batch size
    matters: sparse wins at small batches); None uses
    :func:`deepshrink.models.inputs.example_inputs` (a batch of one) for models
    built by ``deepshrink.models.create``. The model is put in eval mode.
    Returns a report with the measured times and the decision for every candidate.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(64, 64))
        >>> to_sparse_(m, (torch.randn(1, 64),), rounds=1).skipped["0"]
        'density 1.000 > max_density 0.5'
    """
    if not 0 < max_density <= 1:
        raise ConfigError("max_density", max_density, "a number in (0, 1]", "to_sparse_")
    if not min_speedup > 0:
        raise ConfigError("min_speedup", min_speedup, "a number > 0 (e.g. 1.1: at least 10% faster)", "to_sparse_")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError("rounds", rounds, "an integer >= 1", "to_sparse_")
    if example_inputs is None:
        from ..models.inputs import example_inputs as default_inputs

        example_inputs = default_inputs(model)
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    model.eval()
    report = Report(method="to_sparse")
    candidates = []
    for name, layer in model.named_modules():
        if not isinstance(layer, (nn.Linear, nn.Conv2d)) or not name:
            continue
        if layer.weight.device.type != "cpu" or layer.weight.dtype != torch.float32:
            report.skipped[name] = "sparse layers run float32 weights on the CPU"
            continue
        density = _weight_density(layer)
        if density > max_density:
            report.skipped[name] = f"density {density:.3f} > max_density {max_density}"
            continue
        if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
            report.skipped[name] = "grouped convolutions and non-zero padding stay dense"
            continue
        candidates.append(name)
    inputs = _capture_inputs(model, candidates, tuple(example_inputs))
    for name in candidates:
        if name not in inputs:
            report.skipped[name] = "not called by the example inputs"
            continue
        layer = model.get_submodule(name)
        sparse = sparse_form(layer)
        x = inputs[name]
        with torch.inference_mode():
            timing = compare_speed(lambda: layer(x), lambda: sparse(x), rounds=rounds)
        chosen = timing["speedup"] >= min_speedup
        report.per_layer[name] = {"density": _weight_density(layer), **{k: round(v, 4) for k, v in timing.items()},
                                  "sparse": chosen}
        if chosen:
            set_module(model, name, sparse)
            record_surgery(model, {"op": OP, "module": name})
            report.changed.append(name)
        else:
            report.skipped[name] = f"sparse form only {timing['speedup']:.2f}x as fast (< min_speedup {min_speedup})"
    report.figures.update({"layers_sparse": len(report.changed), "candidates": len(candidates)})
    return report


def sparsify_recorded_(model: nn.Module) -> list[str]:
    """Swap in the sparse form of the layers the model's surgery log records; returns their names.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 4))
        >>> record_surgery(m, {"op": "sparse_layer", "module": "0"})
        >>> sparsify_recorded_(m), type(m[0]).__name__
        (['0'], 'SparseLinear')
    """
    names = [e["module"] for e in surgery_log(model) if e.get("op") == OP]
    for name in names:
        layer = model.get_submodule(name)
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            set_module(model, name, sparse_form(layer))
    return names


def load_sparse_(model: nn.Module) -> nn.Module:
    """What ``deepshrink.load(path, sparse=True)`` does after loading: the recorded layers, or a fresh measurement.

    Example:
        >>> import deepshrink as ds
        >>> type(load_sparse_(ds.models.create("lenet300")).fc1).__name__  # dense weights stay dense
        'Linear'
    """
    if not sparsify_recorded_(model):
        to_sparse_(model)
    return model.eval()
