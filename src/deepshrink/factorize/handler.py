"""The driver behind ``factorize_``: pick layers, choose ranks, fit, replace, record surgery, report.

Every factored layer is reported with its parameters, MACs (counted by
:mod:`deepshrink.analysis`) and, when ``latency`` is on, its measured CPU
latency at batch 1 against the original, together with the relative error of
its output on the example input. After the replacements, the surgery log is
replayed on a shape-only copy of the original model and every shape is
compared, so a log that would not rebuild the model is never kept.

Example:
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> report = ds.factorize_(model, ds.SVD(ratio=0.5, layers=("fc2", "fc3"), latency=False))
    >>> report.figures["layer_params_after"] <= 0.5 * report.figures["layer_params_before"], type(model.fc2).__name__
    (True, 'FactoredLinear')
"""

from __future__ import annotations

import copy
import fnmatch
import statistics
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..analysis.latency import measure_latency
from ..analysis.macs import total_macs
from ..data.bundle import DataBundle
from ..dispatch import Report, factorize_
from ..errors import ConfigError
from ..models.inputs import forward_error
from ..progress import StepProgress
from ..surgery import record_surgery, replay_surgery, set_module
from .calibrate import LossProbe, collect, data_batches, layer_examples
from .compact import DEPTHWISE_METHOD, fire_method
from .config import CP, SVD, DepthwiseSeparable, FactorizeConfig, Fire, Separable, Tucker
from .cp import CP_METHOD
from .layers import FACTORED_TYPES
from .method import LayerData, Method, Rank, rank_at_most
from .ranks import allocate, layer_cost, sensitivity_curves
from .refit import refit_factored
from .separable import SEPARABLE_METHOD
from .svd import SVD_METHOD
from .tucker import TUCKER_METHOD

LATENCY_ROUNDS = 3
LATENCY_REPEATS = 15


def method_for(config: FactorizeConfig) -> Method:
    """The method object that carries out a config.

    Example:
        >>> method_for(Tucker(ratio=0.5)).op
        'tucker2_conv'
    """
    if isinstance(config, SVD):
        return SVD_METHOD
    if isinstance(config, Tucker):
        return TUCKER_METHOD
    if isinstance(config, CP):
        return CP_METHOD
    if isinstance(config, Separable):
        return SEPARABLE_METHOD
    if isinstance(config, DepthwiseSeparable):
        return DEPTHWISE_METHOD
    if isinstance(config, Fire):
        return fire_method(config)
    raise ConfigError("config", type(config).__name__, "a factorization config (SVD, Tucker, CP, Separable, DepthwiseSeparable, Fire)")


def _select(model: nn.Module, config: FactorizeConfig, method: Method, report: Report) -> dict[str, nn.Module]:
    inside: set[str] = set()
    for name, m in model.named_modules():
        if isinstance(m, FACTORED_TYPES):
            inside.update(f"{name}.{sub}" if name else sub for sub, _ in m.named_modules() if sub)
    # nn.MultiheadAttention's fused forward reads its out_proj's .weight and .bias directly, so a
    # factored out_proj would break it; its in-projection is a bare parameter, not a layer.
    fused = {f"{name}.{sub}" if name else sub for name, m in model.named_modules()
             if isinstance(m, nn.MultiheadAttention) for sub, _ in m.named_children()}
    layers: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if not name or name in inside:
            continue
        if name in fused:
            if not config.layers or any(fnmatch.fnmatchcase(name, p) for p in config.layers):
                report.skipped[name] = ("the output projection of an nn.MultiheadAttention, whose fused forward reads "
                                        "its weight directly; it cannot be replaced by two layers")
            continue
        if config.layers and not any(fnmatch.fnmatchcase(name, p) for p in config.layers):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in config.ignored):
            continue
        why = method.reason_not(m, config)
        if why is None:
            layers[name] = m
        elif why:
            report.skipped[name] = why
    return layers


def _breaks_forward(model: nn.Module, name: str, module: nn.Module, method: Method, inputs: tuple[Any, ...]) -> str | None:
    """Why the model stops running when ``name`` is replaced by its factored form, or None if it runs.

    Some parents read a child's parameters directly instead of calling it (Swin's window attention passes
    ``qkv.weight`` to a functional kernel), so the replacement is tried, structure only, before any fit.
    """
    set_module(model, name, method.build(module, method.candidates(module)[0]))
    try:
        exc = forward_error(model, inputs)
    finally:
        set_module(model, name, module)
    if exc is None:
        return None
    return (f"the model does not run with this layer factored ({type(exc).__name__}: {str(exc)[:120]}); "
            "its parent probably reads the layer's weight directly")


def _as_inputs(example_inputs: Any) -> tuple[Any, ...] | None:
    if example_inputs is None:
        return None
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def _latency(original: nn.Module, factored: nn.Module, x: Tensor) -> tuple[float, float]:
    """Median latency (ms) of each module at batch 1, measured in alternating rounds so that load hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(LATENCY_ROUNDS):
        a.append(measure_latency(original, (x,), repeats=LATENCY_REPEATS, warmup=2, threads=1)["median_ms"])
        b.append(measure_latency(factored, (x,), repeats=LATENCY_REPEATS, warmup=2, threads=1)["median_ms"])
    return statistics.median(a), statistics.median(b)


@torch.no_grad()
def _output_error(original: nn.Module, factored: nn.Module, x: Tensor) -> float:
    want, got = original(x).double(), factored(x).double()
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


def _ranks(model: nn.Module, config: FactorizeConfig, method: Method, layers: dict[str, nn.Module],
           examples: dict[str, Tensor], inputs: tuple[Any, ...] | None, data: DataBundle | None,
           fit: Any, report: Report) -> dict[str, Rank]:
    fixed = {name: method.config_rank(m, config) for name, m in layers.items()}
    ratio = getattr(config, "ratio", None)
    if ratio is None:
        return fixed
    chosen: dict[str, Rank] = {}
    if config.allocation == "uniform":
        for name, m in layers.items():
            budget = ratio * layer_cost(method, m, None, config.target, examples.get(name))
            rank = rank_at_most(method, m, budget, config.target, examples.get(name))
            if rank is None:
                report.skipped[name] = f"no rank keeps {config.target} at or below ratio {ratio}"
            else:
                chosen[name] = rank
        return chosen
    probe = LossProbe(model, data, inputs, config.sensitivity_samples, config.seed)
    curves = sensitivity_curves(model, method, layers, config, examples, probe, fit)
    total = sum(opts[0].cost for opts in curves.values())
    picked = allocate(curves, ratio * total)
    report.figures["sensitivity_loss"] = probe.kind
    report.figures["sensitivity"] = {
        name: [{"rank": o.rank, "cost": o.cost, "delta_loss": o.delta} for o in opts] for name, opts in curves.items()
    }
    for name, rank in picked.items():
        if rank is None:
            report.skipped[name] = "kept whole: the sensitivity allocation spent the budget elsewhere"
        else:
            chosen[name] = rank
    return chosen


def _replace_layer(model: nn.Module, name: str, module: nn.Module, rank: Rank, fit: Any, method: Method,
                   x: Tensor | None, config: FactorizeConfig, report: Report) -> None:
    """Fit ``module``'s replacement at ``rank``, swap it in, log the surgery and the layer's figures."""
    new = fit(name, module, rank)
    row: dict[str, Any] = {"kind": type(new).__name__, "rank": list(rank) if isinstance(rank, tuple) else rank}
    row["params_before"] = sum(p.numel() for p in module.parameters())
    row["params_after"] = sum(p.numel() for p in new.parameters())
    if x is not None:
        row["macs_before"] = total_macs(module, (x,))
        row["macs_after"] = total_macs(new, (x,))
        row["output_error"] = _output_error(module, new, x)
        if config.latency:
            row["latency_ms_before"], row["latency_ms_after"] = _latency(module, new, x)
            row["speedup"] = row["latency_ms_before"] / max(row["latency_ms_after"], 1e-9)
    set_module(model, name, new)
    record_surgery(model, method.entry(name, module, rank))
    report.changed.append(name)
    report.per_layer[name] = row


def run_factorize(model: nn.Module, config: FactorizeConfig, *, data: DataBundle | None = None,
                  example_inputs: Any = None, **_: Any) -> Report:
    """Factor the selected layers of ``model`` in place as ``config`` says; returns a Report.

    ``data`` (a DataBundle) is used for data-driven fits (whitening, least
    squares), for measuring sensitivity (its validation split) and, without
    ``example_inputs``, for the example input that MACs and latency are measured on.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet5")
        >>> r = ds.factorize_(m, ds.Tucker(ranks=(4, 8), layers=("conv2",), iterations=0, latency=False),
        ...                   example_inputs=ds.models.example_inputs(m))  # doctest: +SKIP
        >>> r.changed, r.per_layer["conv2"]["rank"], r.per_layer["conv2"]["macs_after"] < r.per_layer["conv2"]["macs_before"]  # doctest: +SKIP
        (['conv2'], [4, 8], True)
    """
    method = method_for(config)
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("model", "a model with masks or codebooks",
                          "a plain model: fold masks and sharing first (deepshrink.fold_masks, deepshrink.fold_sharing)",
                          type(config).__name__)
    report = Report(method=method.label)
    params_before = sum(p.numel() for p in model.parameters())
    report.figures["params_before"] = params_before
    layers = _select(model, config, method, report)
    if example_inputs is None and data is not None:
        from ..models.inputs import example_inputs as _examples

        example_inputs = _examples(model, data)
    inputs = _as_inputs(example_inputs)
    if inputs is not None:
        broken = {n: why for n, m in layers.items() if (why := _breaks_forward(model, n, m, method, inputs)) is not None}
        for name, why in broken.items():
            report.skipped[name] = why
            del layers[name]
    examples = layer_examples(model, list(layers), inputs) if inputs is not None and layers else {}
    if config.target == "macs" and inputs is None:
        raise ConfigError("target", "macs", "'params', or pass example_inputs=... or data=... so that MACs can be counted",
                          type(config).__name__)
    if isinstance(config, SVD) and config.whiten and data is None:
        raise ConfigError("whiten", True, "false, or pass data=... (training inputs give the covariance to whiten by)", "SVD")
    refit = isinstance(config, SVD) and config.reconstruct
    if refit and data is None:
        raise ConfigError("reconstruct", True, "false, or pass data=... (the refit matches the original's outputs on "
                          "training inputs)", "SVD")
    calib: dict[str, LayerData] = {}
    batches: list[tuple[Any, ...]] = []
    if (method.needs_calibration(config) or refit) and data is not None and layers:
        batches = data_batches(model, data, "train", config.calibration_samples, seed=config.seed)
    if method.needs_calibration(config) and data is not None and layers:
        linears = [n for n, m in layers.items() if isinstance(m, nn.Linear)]
        convs = [n for n, m in layers.items() if isinstance(m, nn.Conv2d)]
        calib = collect(model, linears, convs, batches, config.calibration_samples)
        report.figures["calibration_samples"] = sum(int(b[0].shape[0]) for b in batches)

    def fitter(cfg: FactorizeConfig) -> Any:
        def fit(name: str, module: nn.Module, rank: Rank) -> nn.Module:
            new = method.fit(module, rank, cfg, calib.get(name, LayerData()))
            return new.to(module.weight.dtype).train(module.training)
        return fit

    fit = fitter(config)
    # CP's trial fits for the sensitivity curves stop sooner than the final fits (CP.probe_iterations).
    probe_fit = fitter(config.replace(iterations=min(config.iterations, config.probe_iterations))) if isinstance(config, CP) else fit

    ranks = _ranks(model, config, method, layers, examples, inputs, data, probe_fit, report)
    shadow_base = copy.deepcopy(model).to("meta")
    original = copy.deepcopy(model) if refit else None  # the targets of the refit
    todo = [name for name in layers if ranks.get(name) is not None]
    with StepProgress(config.progress, len(todo), method.label) as bar:
        for name in todo:
            bar.start(name)
            _replace_layer(model, name, layers[name], ranks[name], fit, method, examples.get(name), config, report)
            bar.done()
    if original is not None:
        for name, err in refit_factored(model, original, report.changed, batches).items():
            report.per_layer[name]["refit_error_before"] = err["before"]
            report.per_layer[name]["refit_error_after"] = err["after"]
        del original
    _check_replay(model, shadow_base, len(report.changed))
    params_after = sum(p.numel() for p in model.parameters())
    report.figures["params_after"] = params_after
    report.figures["param_ratio"] = params_after / max(params_before, 1)
    rows = report.per_layer.values()
    report.figures["layer_params_before"] = sum(r["params_before"] for r in rows)
    report.figures["layer_params_after"] = sum(r["params_after"] for r in rows)
    if rows and all("macs_before" in r for r in rows):
        report.figures["layer_macs_before"] = sum(r["macs_before"] for r in rows)
        report.figures["layer_macs_after"] = sum(r["macs_after"] for r in rows)
    return report


def _check_replay(model: nn.Module, shadow: nn.Module, added: int) -> None:
    """Replay this call's surgery entries on a meta copy of the input model and compare every shape."""
    from ..surgery import surgery_log

    log = surgery_log(model)
    if added:
        replay_surgery(shadow, log[len(log) - added :])
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in shadow.state_dict().items()}
    if want != got:
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        raise RuntimeError(f"factorization produced shapes the surgery log cannot rebuild: {bad[:5]}")


for _cfg in (SVD, Tucker, CP, Separable, DepthwiseSeparable, Fire):
    factorize_.register(_cfg)(run_factorize)

__all__ = ["method_for", "run_factorize"]
