"""Analysis, separate from the algorithms: parameters, nonzeros, bytes, MACs, latency, reports.

Example:
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> summary = ds.analysis.summarize(model, ds.models.example_inputs(model))
    >>> summary.params, summary.macs
    (266610, 266200)
"""

from __future__ import annotations

from .latency import compare_latency, measure_latency
from .macs import count_macs, total_macs
from .report import LayerRow, ModelSummary, summarize
from .stats import LayerStats, count_nonzeros, count_parameters, layer_stats

__all__ = [
    "LayerRow",
    "LayerStats",
    "compare_latency",
    "ModelSummary",
    "count_macs",
    "count_nonzeros",
    "count_parameters",
    "layer_stats",
    "measure_latency",
    "summarize",
    "total_macs",
]
