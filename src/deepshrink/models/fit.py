"""Fit a built-in model's input and output size to a data set."""

from __future__ import annotations

import inspect
import math
from typing import Any

from ..data.bundle import DataBundle


def kwargs_for_data(spec: str, data: DataBundle | None, factory: Any = None) -> dict[str, Any]:
    """Keyword arguments that size model ``spec`` for ``data`` (inputs, classes).

    Only arguments the factory accepts are given; specs without a built-in
    factory (torchvision, hf, minilm) get none.

    Example:
        >>> import deepshrink as ds
        >>> kwargs_for_data("lenet300", ds.data.load("digits"))
        {'in_features': 64, 'num_classes': 10}
    """
    from . import BUILTIN

    if data is None or data.task != "classification":
        return {}
    factory = factory or BUILTIN.get(spec)
    if factory is None:
        return {}
    accepted = inspect.signature(factory).parameters
    shape = tuple(data.input_shape)
    offer: dict[str, Any] = {"in_features": int(math.prod(shape)), "num_classes": data.num_classes}
    if len(shape) == 3:
        offer.update({"in_channels": shape[0], "image_size": shape[-1]})
    return {k: v for k, v in offer.items() if k in accepted and v is not None}
