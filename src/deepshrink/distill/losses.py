"""Hinton et al. (2015) distillation loss and an engine objective built on it."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..train.batches import split_batch
from ..train.callbacks import TrainState


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float = 4.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """Per-sample distillation loss: ``alpha * T**2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels)``.

    The ``T**2`` factor keeps the soft-target gradients on the scale of the hard-label
    ones when the temperature changes (Hinton et al. 2015). ``alpha = 0`` is plain
    cross-entropy.

    Example:
        >>> s, t = torch.zeros(2, 3), torch.zeros(2, 3)
        >>> float(kd_loss(s, t, torch.tensor([0, 1]), alpha=1.0).sum())
        0.0
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    soft = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1) * (t * t)
    if labels is None or alpha >= 1.0:
        return alpha * soft if alpha < 1.0 else soft
    hard = F.cross_entropy(student_logits, labels, reduction="none")
    return alpha * soft + (1.0 - alpha) * hard


def distillation_objective(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.5) -> Any:
    """An engine objective: the student learns from ``teacher``'s softened outputs and the labels.

    Example:
        >>> teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> obj = distillation_objective(teacher)
        >>> obj(student, (torch.zeros(2, 4), torch.tensor([0, 1])), None).shape
        torch.Size([2])
    """
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def objective(model: nn.Module, batch: Any, state: TrainState | None) -> torch.Tensor:
        x, y = split_batch(batch)
        with torch.no_grad():
            target = teacher(x)
        return kd_loss(model(x), target, y, temperature, alpha)

    return objective
