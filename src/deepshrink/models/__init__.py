"""Model factories, all offline: ``deepshrink.models.create(spec, **kwargs)``.

Built-in specs are registered in :data:`BUILTIN`; prefixed specs are
``torchvision:NAME``, ``hf:DIR`` and ``minilm``. Every model that ``create``
returns remembers its spec, so a compressed file can rebuild it.

Example:
    >>> import deepshrink as ds
    >>> sum(p.numel() for p in ds.models.create("lenet300").parameters())
    266610
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import SpecError
from ..surgery import set_model_spec
from .lenet import LeNet5, LeNet300

BUILTIN: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
}

PREFIXES = ("torchvision:NAME", "hf:DIR", "minilm")


def accepted_specs() -> str:
    """The model specs that :func:`create` accepts, for error messages.

    Example:
        >>> "lenet5" in accepted_specs()
        True
    """
    return ", ".join(sorted(BUILTIN) + list(PREFIXES))


def create(spec: str, **kwargs: Any) -> nn.Module:
    """Build a model from a spec; raises :class:`SpecError` for an unknown one.

    Example:
        >>> create("lenet5").fc2.out_features
        10
    """
    if not isinstance(spec, str) or not spec:
        raise SpecError(f"model spec must be a non-empty string; accepted: {accepted_specs()}")
    head, _, rest = spec.partition(":")
    if spec in BUILTIN:
        try:
            model = BUILTIN[spec](**kwargs)
        except TypeError as exc:
            raise SpecError(f"bad arguments for model {spec!r}: {exc}") from None
    elif head == "torchvision" and rest:
        from .vision import create_torchvision

        model = create_torchvision(rest, **kwargs)
    elif head == "hf" and rest:
        from .hf import create_hf

        model = create_hf(rest, **kwargs)
    elif spec == "minilm":
        from .minilm import create_minilm

        model = create_minilm(**kwargs)
    else:
        raise SpecError(f"unknown model spec {spec!r}; accepted: {accepted_specs()}")
    set_model_spec(model, spec, {k: v for k, v in kwargs.items() if k != "weights"})
    return model
