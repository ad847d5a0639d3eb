"""KD: the config of Hinton-style knowledge distillation."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, check_range, register_config


@register_config("kd")
@dataclass(frozen=True)
class KD(Config):
    """Distillation settings: softmax temperature and the weight of the soft-target loss.

    Example:
        >>> KD(temperature=4.0, alpha=0.7).alpha
        0.7
    """

    temperature: float = 4.0
    alpha: float = 0.5

    def validate(self) -> None:
        check_range(self, "temperature", 0, None, lo_open=True)
        check_range(self, "alpha", 0, 1)
