"""Measured CPU latency: the median of repeated forward passes after warm-up.

The model runs in eval mode under ``torch.inference_mode``; its mode and the
process's thread count are restored afterwards. A fixed thread count makes
figures comparable between runs on a shared machine.

Example:
    >>> import torch
    >>> from torch import nn
    >>> r = measure_latency(nn.Linear(8, 8), (torch.zeros(1, 8),), repeats=5, warmup=1)
    >>> r["median_ms"] > 0 and r["repeats"] == 5
    True
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


def measure_latency(
    model: nn.Module,
    example_inputs: Any,
    repeats: int = 50,
    warmup: int = 10,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time ``model(*example_inputs)``; returns milliseconds (median, mean, min, max, p90) and the settings.

    ``threads`` fixes ``torch.set_num_threads`` for the measurement (None keeps
    the current setting). Inputs are not moved: put model and inputs on the
    device you want to time (GPU timings synchronise before reading the clock).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> sorted(measure_latency(nn.ReLU(), (torch.zeros(4),), repeats=3, warmup=0))[:3]
        ['batch_size', 'device', 'max_ms']
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ConfigError("repeats", repeats, "an integer >= 1", "measure_latency")
    if not isinstance(warmup, int) or warmup < 0:
        raise ConfigError("warmup", warmup, "an integer >= 0", "measure_latency")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError("threads", threads, "None or an integer >= 1", "measure_latency")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    first = next((x for x in inputs if isinstance(x, torch.Tensor)), None)
    device = first.device if first is not None else torch.device("cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    old_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            for _ in range(warmup):
                model(*inputs)
            sync()
            for _ in range(repeats):
                start = time.perf_counter()
                model(*inputs)
                sync()
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "repeats": repeats,
        "warmup": warmup,
        "threads": threads if threads is not None else old_threads,
        "batch_size": int(first.shape[0]) if first is not None and first.dim() else 1,
        "device": str(device),
    }


def compare_latency(
    models: dict[str, nn.Module],
    example_inputs: Any,
    rounds: int = 7,
    repeats: int = 10,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Time several models in alternating rounds; medians over rounds, and each model's speed-up over the first.

    Alternating keeps background load from favouring one model over another: every
    model is warmed up first, then each round times every model once (``repeats``
    runs, median) in an order rotated from round to round, and the figures are
    medians over rounds. ``speedup`` is the first model's median over this one's.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> r = compare_latency({"big": nn.Linear(64, 64), "small": nn.Linear(64, 8)}, (torch.zeros(1, 64),), rounds=2, repeats=2)
        >>> sorted(r["small"])
        ['median_ms', 'rounds', 'speedup']
    """
    if not models:
        raise ConfigError("models", models, "at least one named model", "compare_latency")
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError("rounds", rounds, "an integer >= 1", "compare_latency")
    per_round: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for name in names:  # warm every model (allocator, kernel caches) before any timed round
        measure_latency(models[name], example_inputs, repeats=1, warmup=warmup, threads=threads)
    for r in range(rounds):
        # Rotate the order each round so that no model always runs right after the same one.
        for name in names[r % len(names):] + names[: r % len(names)]:
            res = measure_latency(models[name], example_inputs, repeats=repeats, warmup=1, threads=threads)
            per_round[name].append(res["median_ms"])
    first = statistics.median(per_round[next(iter(models))])
    out: dict[str, dict[str, Any]] = {}
    for name, values in per_round.items():
        med = statistics.median(values)
        out[name] = {"median_ms": med, "rounds": values, "speedup": first / med if med > 0 else float("inf")}
    return out
