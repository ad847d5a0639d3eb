"""Latency awareness for structured pruning: MACs and measured CPU latency before and after each step.

Fewer MACs do not always mean less time (Torch-Pruning's own note: 3.9x fewer
MACs gave 2.2x lower latency on ResNet-50): odd channel counts miss fast
kernels, and small layers are bound by overheads. Every pruning step is timed
on the example inputs, and a step whose measured time falls by less than half
of its MAC saving raises a :class:`MacsWithoutTimeWarning` (``round_to`` is the
usual fix).

Example:
    >>> import torch
    >>> cost = measure_cost(nn.Linear(64, 64), (torch.zeros(1, 64),), repeats=3)
    >>> sorted(cost)
    ['latency_min_ms', 'latency_ms', 'macs']
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from ..analysis.latency import measure_latency
from ..analysis.macs import total_macs


class MacsWithoutTimeWarning(UserWarning):
    """A pruning step removed MACs but the measured latency fell by much less."""


def measure_cost(model: nn.Module, example_inputs: tuple[Any, ...], repeats: int = 7) -> dict[str, float]:
    """MACs of one forward, and the median and the fastest latency (ms) over ``repeats`` runs, on ``example_inputs``.

    The median is what the report shows; the fastest run is what :func:`check_step`
    compares, because other work on the machine only ever adds time (a step timed
    while something else ran would otherwise look slower than it is).

    Example:
        >>> import torch
        >>> measure_cost(nn.Linear(8, 4), (torch.zeros(2, 8),), repeats=2)["macs"]
        64
    """
    was_training = model.training
    model.eval()
    try:
        macs = total_macs(model, example_inputs)
        latency = measure_latency(model, example_inputs, repeats=repeats, warmup=2)
    finally:
        model.train(was_training)
    return {"macs": macs, "latency_ms": latency["median_ms"], "latency_min_ms": latency["min_ms"]}


def check_step(before: dict[str, float], after: dict[str, float], step: int) -> str | None:
    """A warning text when a step saved MACs but not (half as much) time; None otherwise.

    Example:
        >>> check_step({"macs": 100, "latency_ms": 10.0}, {"macs": 50, "latency_ms": 9.9}, 1) is not None
        True
        >>> check_step({"macs": 100, "latency_ms": 10.0}, {"macs": 50, "latency_ms": 6.0}, 1) is None
        True
        >>> # a median inflated by other work on the machine: the fastest runs decide
        >>> check_step({"macs": 100, "latency_ms": 10.0, "latency_min_ms": 9.0}, {"macs": 50, "latency_ms": 14.0, "latency_min_ms": 5.0}, 1) is None
        True
    """
    key = "latency_min_ms" if "latency_min_ms" in before and "latency_min_ms" in after else "latency_ms"
    if before["macs"] <= 0 or before[key] <= 0:
        return None
    mac_saving = 1.0 - after["macs"] / before["macs"]
    time_saving = 1.0 - after[key] / before[key]
    if mac_saving >= 0.1 and time_saving < 0.5 * mac_saving:
        return (f"pruning step {step} removed {mac_saving:.0%} of the MACs but only {max(time_saving, 0.0):.0%} of the measured "
                f"latency (fastest of the runs: {before[key]:.2f} -> {after[key]:.2f} ms); channel counts that are multiples of "
                f"8 or 16 (ChannelPruning(round_to=8)) often run faster")
    return None


def warn_step(before: dict[str, float], after: dict[str, float], step: int) -> str | None:
    """:func:`check_step`, raised as a :class:`MacsWithoutTimeWarning` too.

    Example:
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = warn_step({"macs": 100, "latency_ms": 10.0}, {"macs": 40, "latency_ms": 10.0}, 1)
        >>> caught[0].category.__name__
        'MacsWithoutTimeWarning'
    """
    text = check_step(before, after, step)
    if text is not None:
        warnings.warn(text, MacsWithoutTimeWarning, stacklevel=3)
    return text


__all__ = ["MacsWithoutTimeWarning", "check_step", "measure_cost", "warn_step"]
