"""Hinton et al. (2015) distillation loss, ensemble soft targets, FitNets hint loss, and an engine objective."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


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
    cross-entropy. Without labels only the soft term is used, with weight 1.

    Example:
        >>> s, t = torch.zeros(2, 3), torch.zeros(2, 3)
        >>> float(kd_loss(s, t, torch.tensor([0, 1]), alpha=1.0).sum())
        0.0
    """
    t = float(temperature)
    if labels is not None and alpha <= 0.0:
        return F.cross_entropy(student_logits, labels, reduction="none")
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    soft = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1) * (t * t)
    if labels is None or alpha >= 1.0:
        return soft
    hard = F.cross_entropy(student_logits, labels, reduction="none")
    return alpha * soft + (1.0 - alpha) * hard


def ensemble_logits(teacher_logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """Logits whose softmax at ``temperature`` is the average of the teachers' softened softmaxes.

    ``T * log(mean_i softmax(z_i / T))``: feeding this to :func:`kd_loss` distills from the
    averaged soft targets of an ensemble (Hinton et al. 2015, section 4). One teacher is
    returned unchanged.

    Example:
        >>> a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
        >>> torch.softmax(ensemble_logits([a, b], 1.0), -1)
        tensor([[0.5000, 0.5000]])
    """
    if len(teacher_logits) == 0:
        raise ValueError("ensemble_logits needs at least one teacher's logits")
    if len(teacher_logits) == 1:
        return teacher_logits[0]
    t = float(temperature)
    stacked = torch.stack([F.log_softmax(z.float() / t, dim=-1) for z in teacher_logits])
    return t * (torch.logsumexp(stacked, dim=0) - math.log(len(teacher_logits)))


def hint_loss(adapted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error between an adapted student feature map and the teacher's (FitNets).

    Example:
        >>> hint_loss(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4))
        tensor([1., 1.])
    """
    if adapted.shape != target.shape:
        raise ValueError(f"hint shapes differ: adapted student {tuple(adapted.shape)}, teacher {tuple(target.shape)}")
    return ((adapted.float() - target.detach().float()) ** 2).flatten(1).mean(dim=1)


def distillation_objective(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.5) -> Any:
    """An engine objective: the student learns from ``teacher``'s softened outputs and the labels.

    Example:
        >>> teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> obj = distillation_objective(teacher)
        >>> obj(student, (torch.zeros(2, 4), torch.tensor([0, 1])), None).shape
        torch.Size([2])
    """
    from .config import KD
    from .teacher import kd_objective

    return kd_objective([teacher], KD(temperature=temperature, alpha=alpha))
