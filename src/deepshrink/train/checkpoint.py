"""Pickle-free, atomic training checkpoints: safetensors for tensors plus a JSON sidecar.

A checkpoint is two files, ``ckpt-<step>.safetensors`` and ``ckpt-<step>.json``,
and a pointer ``latest.json`` naming the newest complete pair. Each file is
written to a temporary name, fsynced and renamed, and the pointer is replaced
last, so a process killed at any instant leaves either the old or the new
checkpoint, never a torn one. The sidecar records the SHA-256 of the tensor
file, so a damaged pair is detected on load (:class:`FormatError`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import FormatError
from ..fileio import atomic_write_bytes

POINTER = "latest.json"
MAX_SIDECAR_BYTES = 64 * 1024 * 1024


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor out of a nested structure into ``tensors``; leave a reference behind."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_split(k, f"{prefix}/k{i}", tensors), _split(v, f"{prefix}/{i}", tensors)] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint value of type {type(obj).__name__} at {prefix!r} is not a tensor or JSON value")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            key = obj["__tensor__"]
            if key not in tensors:
                raise FormatError(f"checkpoint sidecar refers to tensor {key!r} that the tensor file lacks")
            return tensors[key]
        if set(obj) == {"__tuple__"}:
            return tuple(_join(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__dict__"}:
            return {_join(k, tensors): _join(v, tensors) for k, v in obj["__dict__"]}
        raise FormatError("checkpoint sidecar holds an object of unknown shape")
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def save_checkpoint(directory: str | os.PathLike[str], step: int, state: dict[str, Any], keep: int = 1) -> Path:
    """Write ``state`` (nested dicts/lists of tensors and JSON values) as checkpoint ``step``.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> _ = save_checkpoint(d, 3, {"w": torch.ones(2), "epoch": 1})
        >>> load_checkpoint(d)["epoch"]
        1
    """
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, "s", tensors)
    blob = st_save(tensors) if tensors else st_save({"__empty__": torch.zeros(0)})
    name = f"ckpt-{step:010d}"
    atomic_write_bytes(directory / f"{name}.safetensors", blob)
    sidecar = {"format": "deepshrink-checkpoint", "version": 1, "step": step,
               "sha256": hashlib.sha256(blob).hexdigest(), "state": skeleton}
    atomic_write_bytes(directory / f"{name}.json", json.dumps(sidecar).encode())
    atomic_write_bytes(directory / POINTER, json.dumps({"name": name, "step": step}).encode())
    # Older pairs are removed only after the pointer moved on.
    pairs = sorted(p.stem for p in directory.glob("ckpt-*.json"))
    for old in pairs[:-keep] if keep > 0 else []:
        for suffix in (".json", ".safetensors"):
            try:
                (directory / f"{old}{suffix}").unlink()
            except FileNotFoundError:
                pass
    return directory / f"{name}.json"


def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
    """True when ``directory`` holds a checkpoint pointer.

    Example:
        >>> has_checkpoint("/nonexistent")
        False
    """
    return (Path(directory) / POINTER).is_file()


def load_checkpoint(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the newest complete checkpoint; a damaged one raises :class:`FormatError`.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> _ = save_checkpoint(d, 1, {"t": (torch.arange(3), 2)})
        >>> load_checkpoint(d)["t"][1]
        2
    """
    directory = Path(directory)
    try:
        pointer = json.loads((directory / POINTER).read_bytes()[:4096])
        name = pointer["name"]
        if not isinstance(name, str) or "/" in name or not name.startswith("ckpt-"):
            raise FormatError(f"checkpoint pointer in {directory} names an invalid file {name!r}")
        side_path = directory / f"{name}.json"
        if side_path.stat().st_size > MAX_SIDECAR_BYTES:
            raise FormatError(f"checkpoint sidecar {side_path} is larger than {MAX_SIDECAR_BYTES} bytes")
        sidecar = json.loads(side_path.read_bytes())
        blob = (directory / f"{name}.safetensors").read_bytes()
    except FormatError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"cannot read the checkpoint in {directory}: {exc}") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != "deepshrink-checkpoint":
        raise FormatError(f"{name}.json is not a deepshrink checkpoint sidecar")
    if hashlib.sha256(blob).hexdigest() != sidecar.get("sha256"):
        raise FormatError(f"{name}.safetensors does not match the checksum in its sidecar (damaged file)")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{name}.safetensors is not a valid safetensors file: {exc}") from None
    return _join(sidecar["state"], tensors)
