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
    path: str | os.PathLike[str], out: str | os.PathLike[str], example_inputs: tuple[torch.Tensor, ...] | None = None
) -> dict[str, Any]:
    """Load ``path`` and export the model to ONNX, traced on ``example_inputs``.

    Without ``example_inputs`` the input shape comes from the header's meta
    (``meta["input_shape"]``, e.g. ``[1, 28, 28]``; a batch of 1 is added);
    otherwise pass a tuple of example tensors.

    Example:
        >>> import os, tempfile, torch
        >>> import deepshrink as ds
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "m.dsz")
        >>> _ = ds.save(ds.models.create("lenet300"), p, meta={"input_shape": [1, 28, 28]})
        >>> export_onnx(p, os.path.join(d, "m.onnx"))["bytes"] > 0
        True
    """
    model = load(path)
    if example_inputs is None:
        shape = container.parse(container.read_bytes(path)).meta.get("input_shape")
        if not (isinstance(shape, list) and shape and all(type(d) is int and d > 0 for d in shape)):
            raise ValueError(
                f"{path} has no meta['input_shape']: pass example_inputs=(torch.zeros(1, ...),) to export_onnx"
            )
        example_inputs = (torch.zeros(1, *shape),)
    tmp = f"{os.fspath(out)}.tmp-export"
    try:
        torch.onnx.export(model, tuple(example_inputs), tmp, dynamo=False)
        with open(tmp, "rb") as fh:
            data = fh.read()
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    container.write_atomic(out, data)
    return {"path": os.fspath(out), "bytes": len(data)}
