"""Channel importance criteria for structured pruning, as Torch-Pruning importance objects.

Each criterion scores every channel of a coupled group (a conv's filters plus
the batch-norm scales and next-layer inputs tied to them); the lowest scores
are removed. We reuse Torch-Pruning's implementations rather than writing
our own, so the scores follow the published definitions:

- ``"l1"`` / ``"l2"``: filter norm (Li et al. 2017), ``MagnitudeImportance(p=1|2)``.
- ``"fpgm"``: distance to the geometric median (He et al. 2019).
- ``"taylor"``: first-order Taylor expansion of the loss (Molchanov et al. 2019);
  needs gradients, see :func:`needs_gradients`.
- ``"bn_scale"``: batch-norm scaling factor (network slimming, Liu et al. 2017).
- ``"random"``: a control; seeded by the caller.

Example:
    >>> imp = make_importance("l1")
    >>> type(imp).__name__, needs_gradients("taylor"), needs_gradients("l1")
    ('MagnitudeImportance', True, False)
"""

from __future__ import annotations

from collections.abc import Callable

import torch_pruning as tp

from ..errors import ConfigError

_FACTORIES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "fpgm": lambda: tp.importance.FPGMImportance(p=2),
    "taylor": lambda: tp.importance.TaylorImportance(),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}

IMPORTANCES: tuple[str, ...] = tuple(_FACTORIES)

# Criteria whose scores read ``param.grad``: the caller runs a backward pass first.
_GRADIENT_BASED = frozenset({"taylor"})


def make_importance(name: str) -> tp.importance.Importance:
    """A fresh Torch-Pruning importance object for criterion ``name``.

    Example:
        >>> type(make_importance("fpgm")).__name__
        'FPGMImportance'
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError("importance", name, "one of " + ", ".join(repr(n) for n in IMPORTANCES), "ChannelPruning")
    return factory()


def needs_gradients(name: str) -> bool:
    """Whether criterion ``name`` reads gradients (the caller must run a backward pass first).

    Example:
        >>> needs_gradients("taylor")
        True
    """
    return name in _GRADIENT_BASED
