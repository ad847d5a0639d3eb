"""What early exits buy on a data set: accuracy, share of inputs per exit, average MACs and measured latency per input.

MACs are counted on the operations that actually run (``deepshrink.analysis.macs``
on the early-exit forward, whose batches shrink as inputs leave), so the average
per input is exact for these inputs; the full network is counted the same way
with every exit closed. Latency is measured per input (batch of one) with
``deepshrink.analysis.measure_latency``, early-exit and full network alternating
input by input, so background load hits both alike.

Example:
    >>> import deepshrink as ds
    >>> data = ds.data.load("synthetic:classification:40")
    >>> model = ds.models.create("lenet300", in_features=64, num_classes=4)
    >>> _ = ds.add_exits_(model, ds.EarlyExits(after=["fc1"]), data=data)
    >>> r = exit_report(model, data.test, latency_inputs=2, repeats=1)
    >>> r["macs_per_input"] == r["full_macs_per_input"]  # closed exits: the full network
    True
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..analysis.latency import measure_latency
from ..analysis.macs import total_macs
from ..train.batches import GlobalBatchSampler, fetch, split_batch
from .exits import _run, exit_heads, exits_disabled, predict_with_exits


class _LeaveAt(nn.Module):
    """Runs ``model`` with every input leaving at exit ``k`` (earlier open exits evaluated, as in real inference)."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x: Tensor) -> Tensor:
        heads = exit_heads(self.model)
        active = [i for i in range(self.k) if heads.can_fire(i)] + [self.k]
        base = type(self.model)._deepshrink_base_forward  # type: ignore[attr-defined]
        return _run(self.model, base, (x,), {}, lambda i, logits, rows: torch.full_like(rows, i == self.k, dtype=torch.bool), active)[0]


def exit_report(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 500,
    latency_inputs: int = 200,
    repeats: int = 5,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Accuracy, exit shares, MACs and latency per input of a model with exits, against the full network.

    Keys: ``accuracy``, ``full_accuracy``, ``exit_share`` (per exit and ``final``),
    ``macs_per_input``, ``full_macs_per_input``, ``macs_reduction`` (1 - ratio),
    ``macs_if_leaving_at`` (per exit and ``final``), and, when ``latency_inputs > 0``,
    ``latency_ms_per_input`` / ``full_latency_ms_per_input`` (mean over the first
    ``latency_inputs`` inputs of each one's median of ``repeats`` timed runs).

    Example:
        >>> import deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:40")
        >>> m = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> _ = ds.add_exits_(m, ds.EarlyExits(after=["fc1"]), data=data)
        >>> sorted(exit_report(m, data.test, latency_inputs=0))[:3]
        ['accuracy', 'count', 'exit_share']
    """
    heads = exit_heads(model)
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    k = len(heads.heads)
    n = len(dataset)  # type: ignore[arg-type]
    correct = correct_full = 0
    macs = macs_full = 0
    taken_all: list[Tensor] = []
    first_inputs: list[Tensor] = []
    try:
        with torch.no_grad():
            for _, idx, _ in GlobalBatchSampler(n, batch_size, seed=0, shuffle=False).batches(epoch=0):
                x, y = split_batch(fetch(dataset, idx))
                x, y = x.to(device), y.to(device)
                if sum(t.shape[0] for t in first_inputs) < latency_inputs:
                    first_inputs.append(x[: latency_inputs])
                logits, taken = predict_with_exits(model, x)
                correct += int((logits.argmax(-1) == y).sum())
                taken_all.append(taken.cpu())
                macs += total_macs(model, (x,))
                with exits_disabled(model):
                    full = model(x)
                    macs_full += total_macs(model, (x,))
                correct_full += int((full.argmax(-1) == y).sum())
            one = first_inputs[0][:1] if first_inputs else None
            leave_at: dict[str, int] = {}
            if one is not None:
                for i, name in enumerate(heads.after):
                    leave_at[name] = total_macs(_LeaveAt(model, i), (one,))
                closed_after = [i for i in range(k) if heads.can_fire(i)]
                leave_at["final"] = _final_cost(model, one, closed_after)
    finally:
        model.train(was_training)
    taken_cat = torch.cat(taken_all)
    names = [*heads.after, "final"]
    out: dict[str, Any] = {
        "count": n,
        "accuracy": correct / n,
        "full_accuracy": correct_full / n,
        "exit_share": {name: float((taken_cat == i).sum()) / n for i, name in enumerate(names)},
        "macs_per_input": macs / n,
        "full_macs_per_input": macs_full / n,
        "macs_reduction": 1.0 - macs / macs_full if macs_full else 0.0,
        "macs_if_leaving_at": leave_at,
        "thresholds": [float(t) for t in heads.thresholds.cpu()],
    }
    if latency_inputs > 0 and first_inputs:
        xs = torch.cat(first_inputs)[:latency_inputs]
        early, plain = [], []
        for row in xs:
            one = row.unsqueeze(0)
            early.append(measure_latency(model, (one,), repeats=repeats, warmup=1, threads=threads)["median_ms"])
            with exits_disabled(model):
                plain.append(measure_latency(model, (one,), repeats=repeats, warmup=1, threads=threads)["median_ms"])
        out.update({
            "latency_inputs": int(xs.shape[0]),
            "latency_ms_per_input": statistics.fmean(early),
            "full_latency_ms_per_input": statistics.fmean(plain),
            "latency_ratio": statistics.fmean(early) / statistics.fmean(plain),
            "latency_threads": threads,
        })
    model.train(was_training)
    return out


def _final_cost(model: nn.Module, one: Tensor, open_exits: list[int]) -> int:
    """MACs of an input that passes every open exit without leaving: the backbone plus those heads."""

    class _Stay(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Tensor) -> Tensor:
            base = type(self.inner)._deepshrink_base_forward  # type: ignore[attr-defined]
            return _run(self.inner, base, (x,), {}, lambda i, logits, rows: torch.zeros_like(rows, dtype=torch.bool), open_exits)[0]

    return total_macs(_Stay(model), (one,))
