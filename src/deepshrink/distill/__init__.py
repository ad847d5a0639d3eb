"""Knowledge distillation: ``distill(student, teacher, data, KD(...), TrainConfig(...))``, its losses and objectives."""

from .api import UnlabelledInputs, distill
from .config import KD
from .hints import HintedStudent, make_adapter
from .losses import distillation_objective, ensemble_logits, hint_loss, kd_loss
from .teacher import kd_objective

__all__ = [
    "KD",
    "HintedStudent",
    "UnlabelledInputs",
    "distill",
    "distillation_objective",
    "ensemble_logits",
    "hint_loss",
    "kd_loss",
    "kd_objective",
    "make_adapter",
]
