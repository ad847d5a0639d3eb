"""Load weights into a model from a local file, without pickle.

Two formats are accepted: ``.safetensors`` (read with the safetensors library)
and a PyTorch state dict saved with ``torch.save`` (``.pt``, ``.pth``, ``.bin``),
read with ``torch.load(weights_only=True)`` so that a file can only hold
tensors and plain containers, never code. A pickled module is refused.

Example:
    >>> import os, tempfile, torch
    >>> from torch import nn
    >>> from safetensors.torch import save_file
    >>> src, dst = nn.Linear(3, 2), nn.Linear(3, 2)
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_file(src.state_dict(), path)
    >>> _ = load_weights(dst, path)
    >>> torch.equal(src.weight, dst.weight)
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import FormatError, SpecError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
# Checkpoints written by common trainers nest the state dict under one of these keys.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a flat ``{name: tensor}`` dict from a ``.safetensors`` or ``.pt`` file on CPU.

    Raises :class:`SpecError` for a missing file or an unknown suffix, and
    :class:`FormatError` for a file that is not a state dict of tensors.

    Example:
        >>> import os, tempfile, torch
        >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
        >>> torch.save({"w": torch.ones(2)}, path)
        >>> read_state_dict(path)["w"].tolist()
        [1.0, 1.0]
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"weights file {str(p)!r} does not exist; pass the path of a .safetensors or .pt state dict")
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise FormatError(f"weights file {str(p)!r} is not a valid safetensors file: {exc}") from None
    if suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError... for a bad file
            raise FormatError(
                f"weights file {str(p)!r} is not a plain state dict (only tensors load with weights_only=True; "
                f"save model.state_dict(), not the module): {str(exc).splitlines()[0] if str(exc) else exc}"
            ) from None
        return _flat_tensors(obj, str(p))
    raise SpecError(
        f"weights file {str(p)!r} has unknown suffix {suffix!r}; use one of "
        f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}"
    )


def _flat_tensors(obj: object, where: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise FormatError(f"weights file {where!r} must hold a non-empty dict of tensors (a state dict); got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise FormatError(f"weights file {where!r} has entries that are not named tensors: {', '.join(bad[:5])}")
    return dict(obj)


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load a state dict file into ``model`` in place and return it.

    With ``strict`` (the default) missing or unexpected keys and shape
    mismatches raise :class:`FormatError` naming the first few keys.

    Example:
        >>> import os, tempfile, torch
        >>> from torch import nn
        >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
        >>> torch.save(nn.Linear(2, 2).state_dict(), path)
        >>> isinstance(load_weights(nn.Linear(2, 2), path), nn.Linear)
        True
    """
    state = read_state_dict(path)
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(own[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise FormatError(f"weights file {str(path)!r} does not fit the model: shape mismatch for {'; '.join(wrong[:5])}")
    result = model.load_state_dict(state, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        parts = []
        if result.missing_keys:
            parts.append(f"missing {', '.join(result.missing_keys[:5])}")
        if result.unexpected_keys:
            parts.append(f"unexpected {', '.join(result.unexpected_keys[:5])}")
        raise FormatError(
            f"weights file {str(path)!r} does not fit the model ({'; '.join(parts)}); "
            "check the model spec and its kwargs"
        )
    return model
