"""Shared helpers of the commands: building models for data, weight files, atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from .. import models
from ..data import DataBundle
from ..errors import FormatError, SpecError
from ..models.fit import kwargs_for_data
from ..models.inputs import forward_error
from ..surgery import model_spec
from ..fileio import atomic_write_bytes

SPEC_KEY = "deepshrink_model"


def build_model(spec: str, data: DataBundle | None, weights: str | None = None) -> nn.Module:
    """``models.create(spec)`` sized for ``data``, with weights loaded from a file if given.

    Example:
        >>> import deepshrink as ds
        >>> build_model("lenet300", ds.data.load("digits")).fc1.in_features
        64
    """
    model = models.create(spec, **kwargs_for_data(spec, data))
    if weights is not None:
        load_weights_into(model, weights)
    if data is not None:
        check_model_runs_on(model, spec, data)
    return model


def check_model_runs_on(model: nn.Module, spec: str, data: DataBundle) -> None:
    """Run ``model`` once on an item of ``data`` and raise SpecError naming both if it cannot.

    A model built for other inputs (a torchvision classifier takes 3-channel
    images; mnist5k has 1 channel) would otherwise fail deep inside a recipe with
    a shape error about some layer.

    Example:
        >>> import deepshrink as ds
        >>> check_model_runs_on(ds.models.create("lenet300"), "lenet300", ds.data.load("digits"))
        Traceback (most recent call last):
        ...
        deepshrink.errors.SpecError: model 'lenet300' cannot run on the inputs of digits (shape (1, 1, 8, 8)): RuntimeError: ...
    """
    inputs = models.example_inputs(model, data)
    if (exc := forward_error(model, inputs)) is not None:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise SpecError(f"model {spec!r} cannot run on the inputs of {data.name} (shape {shapes}): "
                        f"{type(exc).__name__}: {str(exc)[:200]}; pick a model made for these inputs (built-in "
                        "specs size themselves to the data; torchvision classifiers take 3-channel images)")


def load_weights_into(model: nn.Module, path: str | Path) -> None:
    """Load a .safetensors (or a .pt state dict, read with weights_only=True) into ``model``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(2, "weights file not found", str(p))
    models.load_weights(model, p)


def save_weights(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the model's state dict atomically as safetensors, with its factory spec in the metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {SPEC_KEY: json.dumps(model_spec(model))}
    if extra:
        meta.update({k: json.dumps(v) for k, v in extra.items()})
    p = Path(path)
    atomic_write_bytes(p, save(state, metadata=meta))
    return p


def model_from_weights_file(path: str | Path) -> nn.Module:
    """Rebuild a model from a .safetensors written by `deepshrink train` (its spec is in the metadata)."""
    p = Path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise FormatError(f"{p} is not a valid safetensors file: {exc}") from None
    raw = meta.get(SPEC_KEY)
    if raw is None:
        raise SpecError(f"{p} does not say which model it holds; pass the model spec and --weights {p}")
    try:
        spec = json.loads(raw)
        model = models.create(spec["spec"], **spec.get("kwargs", {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{p} has an invalid model spec in its metadata: {exc}") from None
    load_weights_into(model, p)
    return model
