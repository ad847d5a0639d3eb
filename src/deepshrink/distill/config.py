"""KD: the config of knowledge distillation (Hinton et al. 2015, FitNets hints)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config, check_range, register_config
from ..errors import ConfigError

_HINTS_ALLOWED = "a list of [student_module, teacher_module] name pairs, e.g. [['fc1', 'fc1']]"


@register_config("kd")
@dataclass(frozen=True)
class KD(Config):
    """Distillation settings.

    Fields:
        temperature: softmax temperature ``T`` of the soft targets (> 0).
        alpha: weight of the soft-target loss, in [0, 1]; ``1 - alpha`` weighs
            the hard-label cross-entropy (``alpha = 0`` is plain cross-entropy).
        hints: FitNets hints, pairs ``(student_module, teacher_module)``: the
            student module's output is regressed through a learned adapter onto
            the teacher module's output.
        hint_weight: weight of each hint's mean squared error in the loss.

    Example:
        >>> KD(temperature=4.0, alpha=0.7).alpha
        0.7
        >>> KD(hints=[("fc1", "conv2")]).hints
        (('fc1', 'conv2'),)
        >>> KD(hints=[("fc1",)])
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: KD.hints=[('fc1',)] is invalid: expected a list of [student_module, teacher_module] name pairs, e.g. [['fc1', 'fc1']]
    """

    temperature: float = 4.0
    alpha: float = 0.5
    hints: tuple[tuple[str, str], ...] = ()
    hint_weight: float = 1.0

    def __post_init__(self) -> None:
        # Accept lists (as users and YAML write them); store tuples so the config stays hashable.
        object.__setattr__(self, "hints", _normalise_hints(self.hints))
        super().__post_init__()

    def validate(self) -> None:
        check_range(self, "temperature", 0, None, lo_open=True)
        check_range(self, "alpha", 0, 1)
        check_range(self, "hint_weight", 0, None)


def _normalise_hints(hints: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(hints, (list, tuple)):
        raise ConfigError("hints", hints, _HINTS_ALLOWED, "KD")
    out = []
    for pair in hints:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(n, str) and n for n in pair)):
            raise ConfigError("hints", list(hints), _HINTS_ALLOWED, "KD")
        out.append((pair[0], pair[1]))
    return tuple(out)
