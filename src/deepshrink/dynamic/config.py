"""EarlyExits: where to attach early-exit classifiers and what they look like."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config, check_choice, check_range, register_config
from ..errors import ConfigError

CONFIDENCES = ("max_prob", "entropy")
_AFTER_ALLOWED = "a non-empty list of distinct module names, e.g. ['layer1', 'layer2']"


@register_config("early_exits")
@dataclass(frozen=True)
class EarlyExits(Config):
    """Early-exit classifiers (BranchyNet / MSDNet style) on the outputs of named modules.

    Fields:
        after: module names whose outputs feed an exit, in the order the network runs them.
        channels: a 3x3 convolution (with batch norm and ReLU) of this many channels
            opens each head on a feature map, as in MSDNet's classifiers; 0 = none.
        pool: feature maps are average-pooled to ``pool x pool`` before the linear
            layers (smaller maps are kept as they are).
        hidden: width of a hidden fully connected layer (with ReLU); 0 = a linear classifier.
        confidence: ``"max_prob"`` (the largest softmax probability) or ``"entropy"``
            (``1 - H(p) / log(classes)``, BranchyNet's criterion); both lie in [0, 1],
            and an input leaves at the first exit whose confidence reaches its threshold.

    Example:
        >>> EarlyExits(after=["conv1", "conv2"], pool=2).after
        ('conv1', 'conv2')
        >>> EarlyExits(after=[])
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: EarlyExits.after=[] is invalid: expected a non-empty list of distinct module names, e.g. ['layer1', 'layer2']
    """

    after: tuple[str, ...] = ()
    channels: int = 0
    pool: int = 4
    hidden: int = 0
    confidence: str = "max_prob"

    def __post_init__(self) -> None:
        object.__setattr__(self, "after", _normalise_after(self.after))
        super().__post_init__()

    def validate(self) -> None:
        check_range(self, "channels", 0, None, integer=True)
        check_range(self, "pool", 1, None, integer=True)
        check_range(self, "hidden", 0, None, integer=True)
        check_choice(self, "confidence", CONFIDENCES)


def _normalise_after(after: Any) -> tuple[str, ...]:
    if isinstance(after, str) or not isinstance(after, (list, tuple)):
        raise ConfigError("after", after, _AFTER_ALLOWED, "EarlyExits")
    names = tuple(after)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ConfigError("after", list(names), _AFTER_ALLOWED, "EarlyExits")
    return names
