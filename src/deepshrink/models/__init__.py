"""Model factories, all offline: ``deepshrink.models.create(spec, **kwargs)``.

Built-in specs are registered in :data:`BUILTIN`; prefixed specs are
``torchvision:NAME``, ``timm:NAME`` (when timm is installed), ``hf:DIR`` and ``minilm``. Every model that ``create``
returns remembers its spec, so a compressed file can rebuild it.

Example:
    >>> import deepshrink as ds
    >>> sum(p.numel() for p in ds.models.create("lenet300").parameters())
    266610
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import SpecError
from ..surgery import set_model_spec
from .inputs import example_inputs
from .lenet import LeNet5, LeNet300
from .mlp import MLP
from .small import SmallCNN, SmallResNet, SmallVGG
from .weights import load_weights, read_state_dict

BUILTIN: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "cnn_small": SmallCNN,
    "vgg_small": SmallVGG,
    "resnet_small": SmallResNet,
    "mlp": MLP,
}

__all__ = ["BUILTIN", "accepted_specs", "create", "example_inputs", "load_weights", "read_state_dict"]

PREFIXES = ("torchvision:NAME", "timm:NAME", "hf:DIR", "minilm")


def accepted_specs() -> str:
    """The model specs that :func:`create` accepts, for error messages.

    Example:
        >>> "lenet5" in accepted_specs()
        True
    """
    return ", ".join(sorted(BUILTIN) + list(PREFIXES))


def create(spec: str, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build a model from a spec; raises :class:`SpecError` for an unknown one.

    ``weights`` names a local ``.safetensors`` or ``.pt`` state dict to load
    (without pickle, see :mod:`deepshrink.models.weights`); the recorded spec
    leaves it out, since a compressed file carries its own weights.

    Example:
        >>> create("lenet5").fc2.out_features
        10
    """
    if not isinstance(spec, str) or not spec:
        raise SpecError(f"model spec must be a non-empty string; accepted: {accepted_specs()}")
    head, _, rest = spec.partition(":")
    try:
        if spec in BUILTIN:
            model = BUILTIN[spec](**kwargs)
        elif head == "torchvision" and rest:
            from .vision import create_torchvision

            model = create_torchvision(rest, **kwargs)
        elif head == "timm" and rest:
            from .timm_models import create_timm

            model = create_timm(rest, **kwargs)
        elif head == "hf" and rest:
            from .hf import create_hf

            model = create_hf(rest, **kwargs)
        elif spec == "minilm":
            from .minilm import create_minilm

            model = create_minilm(**kwargs)
        else:
            raise SpecError(f"unknown model spec {spec!r}; accepted: {accepted_specs()}")
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"bad arguments for model {spec!r}: {exc}") from None
    if weights is not None:
        load_weights(model, weights)
    set_model_spec(model, spec, kwargs)
    return model
