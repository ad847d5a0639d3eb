"""``torchvision:NAME``: any torchvision classification model, random init or local weights.

Nothing is downloaded: torchvision's own pretrained-weight enums are not used.
Pretrained weights come from a local file (``.safetensors`` or a ``.pt`` state
dict, read without pickle by :mod:`deepshrink.models.weights`).

Example:
    >>> m = create_torchvision("resnet18", num_classes=10)
    >>> m.fc.out_features
    10
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import SpecError
from .weights import load_weights

# Inputs these models are designed for; example_inputs uses them when no data is given.
DEFAULT_INPUT_SHAPE = (3, 224, 224)
_INPUT_SHAPES = {"inception_v3": (3, 299, 299)}


def classification_models() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models``).

    Example:
        >>> "resnet18" in classification_models()
        True
    """
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def input_shape(name: str) -> tuple[int, int, int]:
    """The (C, H, W) input a torchvision classifier expects.

    Example:
        >>> input_shape("resnet18")
        (3, 224, 224)
    """
    return _INPUT_SHAPES.get(name, DEFAULT_INPUT_SHAPE)


def create_torchvision(name: str, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build torchvision's classifier ``name`` with random init, then load ``weights`` if given.

    ``kwargs`` go to the torchvision constructor (e.g. ``num_classes``).
    Unknown names raise :class:`SpecError` saying how to list the valid ones.

    Example:
        >>> create_torchvision("mobilenet_v3_small").classifier[-1].out_features
        1000
    """
    try:
        import torchvision
    except ImportError:
        raise SpecError("torchvision models need torchvision: pip install 'deepshrink[vision]'") from None
    names = classification_models()
    if name not in names:
        close = [n for n in names if name.lower() in n or n in name.lower()][:8]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise SpecError(
            f"unknown torchvision classification model {name!r}{hint}; list the valid names with "
            "python -c \"import deepshrink.models.vision as v; print(v.classification_models())\""
        )
    try:
        # weights=None: random init; torchvision's own weight enums would download.
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"bad arguments for torchvision model {name!r}: {exc}") from None
    if weights is not None:
        load_weights(model, weights)
    model.example_input_shape = input_shape(name)
    return model
