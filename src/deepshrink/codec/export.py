"""Export a .dsz file to other formats: safetensors (the plain state dict) and ONNX.

Example:
    >>> import os, tempfile
    >>> import deepshrink as ds
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "m.dsz")
    >>> _ = ds.save(ds.models.create("lenet300"), p)
    >>> export_safetensors(p, os.path.join(d, "m.safetensors"))["tensors"]
    6
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch

from . import container
from .api import decompress, load


def export_safetensors(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Decode ``path`` and write its tensors as a safetensors file (architecture and meta in its metadata).

    Example:
        >>> import os, tempfile
        >>> import deepshrink as ds
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "m.dsz")
        >>> _ = ds.save(ds.models.create("lenet5"), p)
        >>> export_safetensors(p, os.path.join(d, "m.st"))["bytes"] > 0
        True
    """
    from safetensors.torch import save as st_save

    header = container.parse(container.read_bytes(path))
    state = {k: v.contiguous() for k, v in decompress(path).items()}
    metadata = {
        "format": "pt",
        "deepshrink.architecture": json.dumps(header.architecture, sort_keys=True),
        "deepshrink.surgery": json.dumps(header.surgery, sort_keys=True),
        "deepshrink.meta": json.dumps(header.meta, sort_keys=True),
    }
    data = st_save(state, metadata=metadata)
    container.write_atomic(out, data)
    return {"path": os.fspath(out), "tensors": len(state), "bytes": len(data)}


def export_onnx(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    example_inputs: tuple[torch.Tensor, ...] | None = None,
    *,
    model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Load ``path`` and export the model to ONNX, traced on ``example_inputs``.

    Without ``example_inputs`` the input shape comes from the header's meta
    (``meta["input_shape"]``, e.g. ``[1, 28, 28]``; a batch of 1 is added), else
    from the model's factory spec (``deepshrink.models.inputs.example_inputs``);
    for a user's own model pass a tuple of example tensors.

    Example:
        >>> import os, tempfile, torch
        >>> import deepshrink as ds
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "m.dsz")
        >>> _ = ds.save(ds.models.create("lenet300"), p, meta={"input_shape": [1, 28, 28]})
        >>> export_onnx(p, os.path.join(d, "m.onnx"))["bytes"] > 0
        True
    """
    model = load(path, model=model)  # model: the skeleton for a file saved without a factory spec
    if example_inputs is None:
        example_inputs = _default_inputs(path, model)
    tmp = f"{os.fspath(out)}.tmp-export"
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated but needs no onnxscript; the output is standard ONNX
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, tuple(example_inputs), tmp, dynamo=False)
        with open(tmp, "rb") as fh:
            data = fh.read()
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    container.write_atomic(out, data)
    return {"path": os.fspath(out), "bytes": len(data)}


def _default_inputs(path: str | os.PathLike[str], model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    shape = container.parse(container.read_bytes(path)).meta.get("input_shape")
    if isinstance(shape, list) and shape and all(type(d) is int and d > 0 for d in shape):
        return (torch.zeros(1, *shape),)
    from ..errors import SpecError
    from ..models.inputs import example_inputs

    try:
        return tuple(example_inputs(model))
    except (SpecError, ValueError, TypeError) as exc:
        raise ValueError(
            f"{path}: no input shape known ({exc}); pass example_inputs=(torch.zeros(1, ...),) to export_onnx"
        ) from None
