"""Per-exit confidence thresholds chosen on a validation set to meet a target accuracy.

The exits are taken in order. Exit ``k`` gets the lowest threshold at which the
whole policy (earlier exits as already chosen, later inputs answered by the
full network) keeps validation accuracy at or above the target: as many inputs
as possible leave as early as possible, where they cost least.

Example:
    >>> import deepshrink as ds
    >>> data = ds.data.load("synthetic:classification:100")
    >>> model = ds.models.create("lenet300", in_features=64, num_classes=4)
    >>> _ = ds.add_exits_(model, ds.EarlyExits(after=["fc1"]), data=data)
    >>> report = ds.calibrate_exits(model, data.val, max_drop=0.0)
    >>> report.figures["val_accuracy"] >= report.figures["target_accuracy"]
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..dispatch import Report
from ..errors import ConfigError
from ..train.batches import GlobalBatchSampler, fetch, split_batch
from .exits import exit_heads, exit_outputs
from .heads import confidence


@torch.no_grad()
def collect_exit_logits(model: nn.Module, dataset: Dataset, batch_size: int = 500) -> tuple[list[Tensor], Tensor]:
    """Every exit's logits and the final logits on a labelled data set (eval mode), plus the labels.

    Example:
        >>> import deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:40")
        >>> m = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> _ = ds.add_exits_(m, ds.EarlyExits(after=["fc1"]), data=data)
        >>> outs, labels = collect_exit_logits(m, data.val)
        >>> len(outs), outs[0].shape[0] == labels.shape[0]
        (2, True)
    """
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    per_output: list[list[Tensor]] = []
    labels: list[Tensor] = []
    try:
        for _, idx, _ in GlobalBatchSampler(len(dataset), batch_size, seed=0, shuffle=False).batches(epoch=0):  # type: ignore[arg-type]
            x, y = split_batch(fetch(dataset, idx))
            outs = exit_outputs(model, x.to(device))
            if not per_output:
                per_output = [[] for _ in outs]
            for acc, o in zip(per_output, outs):
                acc.append(o.float().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not labels:
        raise ValueError("calibrating exits needs a non-empty labelled data set")
    return [torch.cat(o) for o in per_output], torch.cat(labels)


def choose_thresholds(confidences: list[Tensor], correct: list[Tensor], target: float) -> list[float]:
    """Greedy thresholds, exit by exit, keeping the policy's accuracy at or above ``target``.

    ``confidences[k]`` and ``correct[k]`` (bool) are per input, for the K exits and (last)
    the final output; returns K thresholds (``inf``: the exit never fires).

    Example:
        >>> conf = [torch.tensor([0.9, 0.8, 0.3]), torch.tensor([1.0, 1.0, 1.0])]
        >>> ok = [torch.tensor([True, False, True]), torch.tensor([True, True, True])]
        >>> [round(t, 3) for t in choose_thresholds(conf, ok, target=1.0)]
        [0.9]
    """
    n = int(correct[-1].numel())
    exited = torch.zeros(n, dtype=torch.bool)
    correct_done = 0  # correct answers of inputs that already left
    thresholds: list[float] = []
    final_ok = correct[-1].to(torch.int64)
    need = math.ceil(target * n - 1e-9)  # correct answers the policy must keep
    for k in range(len(confidences) - 1):
        rest = (~exited).nonzero().flatten()
        if rest.numel() == 0:
            thresholds.append(math.inf)
            continue
        conf = confidences[k][rest]
        order = torch.argsort(conf, descending=True, stable=True)
        conf_sorted = conf[order]
        gain = correct[k][rest][order].to(torch.int64) - final_ok[rest][order]
        # correct answers if the first j (by confidence) leave here and the rest go to the final output
        totals = correct_done + int(final_ok[rest].sum()) + torch.cat([torch.zeros(1, dtype=torch.int64), gain.cumsum(0)])
        j_all = torch.arange(rest.numel() + 1)
        # a threshold cannot split inputs of equal confidence: cut only between distinct values
        boundary = torch.ones(rest.numel() + 1, dtype=torch.bool)
        boundary[1:-1] = conf_sorted[:-1] > conf_sorted[1:]
        ok = (totals >= need) & boundary
        j = int(j_all[ok].max()) if bool(ok.any()) else 0
        if j == 0:
            thresholds.append(math.inf)
            continue
        thr = float(conf_sorted[j - 1])
        thresholds.append(thr)
        leaving = rest[conf >= thr]
        exited[leaving] = True
        correct_done += int(correct[k][leaving].sum())
    return thresholds


def policy_outcome(confidences: list[Tensor], correct: list[Tensor], thresholds: list[float]) -> tuple[float, list[float]]:
    """Accuracy and the share of inputs leaving at each exit (then the final output) under ``thresholds``.

    Example:
        >>> policy_outcome([torch.tensor([0.9, 0.1]), torch.ones(2)], [torch.tensor([True, False]), torch.ones(2, dtype=torch.bool)], [0.5])
        (1.0, [0.5, 0.5])
    """
    n = int(correct[-1].numel())
    taken = torch.full((n,), len(thresholds), dtype=torch.long)
    for k in reversed(range(len(thresholds))):
        taken[confidences[k] >= thresholds[k]] = k
    ok = torch.stack(correct).gather(0, taken.unsqueeze(0)).squeeze(0)
    shares = [float((taken == k).sum()) / n for k in range(len(thresholds) + 1)]
    return float(ok.float().mean()), shares


def calibrate_exits(
    model: nn.Module,
    dataset: Dataset,
    target_accuracy: float | None = None,
    *,
    max_drop: float | None = None,
    batch_size: int = 500,
) -> Report:
    """Set each exit's confidence threshold on ``dataset`` (the validation split) to meet a target accuracy.

    Give ``target_accuracy`` (a fraction, e.g. 0.985) or ``max_drop`` (a fraction below the full
    network's accuracy on the same data, e.g. 0.003). If the target is above what the full network
    reaches, every exit stays closed and ``figures["met"]`` is False.

    Example:
        >>> import deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:100")
        >>> model = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> _ = ds.add_exits_(model, ds.EarlyExits(after=["fc1"]), data=data)
        >>> ds.calibrate_exits(model, data.val, target_accuracy=0.0).figures["met"]  # untrained: any accuracy will do
        True
    """
    if (target_accuracy is None) == (max_drop is None):
        raise ConfigError("target_accuracy", target_accuracy, "exactly one of target_accuracy and max_drop", "calibrate_exits")
    for name, value in (("target_accuracy", target_accuracy), ("max_drop", max_drop)):
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0):
            raise ConfigError(name, value, "a fraction in [0, 1]", "calibrate_exits")
    heads = exit_heads(model)
    outputs, labels = collect_exit_logits(model, dataset, batch_size)
    labels = labels.to(outputs[0].device)
    correct = [o.argmax(dim=-1) == labels for o in outputs]
    confs = [confidence(o, heads.confidence) for o in outputs]
    full = float(correct[-1].float().mean())
    target = float(target_accuracy) if target_accuracy is not None else full - float(max_drop)  # type: ignore[arg-type]
    thresholds = choose_thresholds(confs, correct, target) if target <= full else [math.inf] * len(heads.heads)
    heads.thresholds.copy_(torch.tensor(thresholds, dtype=heads.thresholds.dtype))
    # The buffer is float32: evaluate the policy with the thresholds as stored.
    stored = [float(t) for t in heads.thresholds.cpu()]
    accuracy, shares = policy_outcome(confs, correct, stored)
    report = Report(method="calibrate_exits", changed=[heads.after[i] for i, t in enumerate(stored) if t <= 1.0])
    report.figures.update({
        "thresholds": stored,
        "target_accuracy": target,
        "full_accuracy": full,
        "val_accuracy": accuracy,
        "met": accuracy >= target - 1e-12,
        "exit_share": dict(zip([*heads.after, "final"], shares)),
        "exit_accuracy": {name: float(c.float().mean()) for name, c in zip([*heads.after, "final"], correct)},
        "count": int(labels.numel()),
    })
    return report
