"""The engine objective of classifier distillation: one teacher or an ensemble, labels or teacher labels, hints.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.distill import KD
    >>> teachers = [nn.Linear(4, 3), nn.Linear(4, 3)]  # an ensemble: averaged soft targets
    >>> objective = kd_objective(teachers, KD(temperature=2.0, alpha=0.5))
    >>> objective(nn.Linear(4, 3), (torch.zeros(5, 4),), None).shape  # unlabelled: the teachers label it
    torch.Size([5])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..train.callbacks import TrainState
from .config import KD
from .hints import FeatureCapture, HintedStudent
from .losses import ensemble_logits, hint_loss, kd_loss


def freeze(teacher: nn.Module) -> nn.Module:
    """Put a teacher in eval mode with gradients off (its outputs are targets, never trained).

    Example:
        >>> t = freeze(nn.Linear(2, 2))
        >>> t.training, t.weight.requires_grad
        (False, False)
    """
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def inputs_and_labels(batch: Any) -> tuple[Any, Tensor | None]:
    """``(inputs, labels)`` of a labelled batch, ``(inputs, None)`` of an unlabelled one.

    Example:
        >>> inputs_and_labels([torch.zeros(2, 3)])[1] is None
        True
    """
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, (list, tuple)) and len(batch) == 1:
        return batch[0], None
    raise ValueError("distillation data must yield (input, label) pairs or inputs alone")


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel keeps the real module on .module
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def kd_objective(teachers: Sequence[nn.Module], kd: KD) -> Any:
    """An engine objective: per-sample :func:`kd_loss` against the (averaged) teachers, plus hint terms.

    Labels come from the batch; on unlabelled batches (inputs only) the teachers'
    averaged prediction is the hard label. With ``kd.hints`` the trained model must
    be a :class:`HintedStudent` and there must be one teacher (hints name its modules).

    Example:
        >>> obj = kd_objective([nn.Linear(4, 3)], KD(alpha=0.0))
        >>> student = nn.Linear(4, 3)
        >>> x, y = torch.zeros(2, 4), torch.tensor([0, 2])
        >>> torch.allclose(obj(student, (x, y), None), torch.nn.functional.cross_entropy(student(x), y, reduction="none"))
        True
    """
    teachers = [freeze(t) for t in teachers]
    if not teachers:
        raise ValueError("distillation needs at least one teacher")
    if kd.hints and len(teachers) != 1:
        raise ValueError(f"hints name modules of one teacher; got an ensemble of {len(teachers)} teachers")
    teacher_names = [t_name for _, t_name in kd.hints]

    def objective(model: nn.Module, batch: Any, state: TrainState | None) -> Tensor:
        x, y = inputs_and_labels(batch)
        device = x.device if isinstance(x, Tensor) else None
        with torch.no_grad(), FeatureCapture(teachers[0], teacher_names) as cap:
            logits = []
            for t in teachers:
                if device is not None:
                    t.to(device)  # no-op once the teacher lives where the batch does
                logits.append(t(x).float())
        target = ensemble_logits(logits, kd.temperature)
        if y is None:
            y = target.argmax(dim=-1)  # transfer data: the teachers label it
        out = model(x)
        loss = kd_loss(out.float(), target, y, kd.temperature, kd.alpha)
        if kd.hints:
            inner = _unwrap(model)
            if not isinstance(inner, HintedStudent):
                raise TypeError("a KD config with hints trains a HintedStudent (use deepshrink.distill)")
            for adapted, t_name in zip(inner.hint_outputs, teacher_names):
                loss = loss + kd.hint_weight * hint_loss(adapted, cap.features[t_name])
        return loss

    return objective
