"""Knowledge distillation: losses and objectives for the training engine."""

from .config import KD
from .losses import distillation_objective, kd_loss

__all__ = ["KD", "distillation_objective", "kd_loss"]
