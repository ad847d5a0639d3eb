"""Pruning masks as torch parametrizations: ``weight = where(mask, original, 0)``.

A mask lives in the model as a :class:`PruningMask` parametrization with a
boolean ``mask`` buffer, so ``state_dict``, ``.to()`` and training keep
working. The effective weight is exactly ``+0.0`` wherever the mask is off,
whatever happens to the stored original (momentum, weight decay, NaN): that
is what makes pruned weights stay zero under any optimizer, and what the .dsz
writer sees when it reads ``module.weight``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> layer = nn.Linear(3, 2)
    >>> apply_mask(layer, "weight", torch.tensor([[True, False, True], [False, True, True]]))
    >>> int((layer.weight == 0).sum())
    2
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize


class PruningMask(nn.Module):
    """Parametrization that zeroes the weights where ``mask`` is False.

    ``torch.where`` rather than a multiplication: ``w * 0`` is ``-0.0`` for
    negative ``w`` and NaN for infinite ``w``; the pruned value must be an
    exact ``+0.0``. The gradient of a pruned original is exactly zero.

    Example:
        >>> import torch
        >>> PruningMask(torch.tensor([True, False]))(torch.tensor([-2.0, -3.0])).tolist()
        [-2.0, 0.0]
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, original, torch.zeros((), dtype=original.dtype, device=original.device))


def get_mask(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The boolean keep-mask of ``module.<name>``, or None when it is not pruned.

    Example:
        >>> from torch import nn
        >>> get_mask(nn.Linear(2, 2)) is None
        True
    """
    if not parametrize.is_parametrized(module, name):
        return None
    for p in module.parametrizations[name]:  # type: ignore[union-attr,index]
        if isinstance(p, PruningMask):
            return p.mask
    return None


def apply_mask(module: nn.Module, name: str, keep: torch.Tensor) -> None:
    """Prune ``module.<name>`` to ``keep`` (True = kept). Masks only shrink.

    On a tensor that is already pruned, the new mask is ANDed with the old one:
    a pruned weight is never revived. The stored original is zeroed where pruned
    so that it carries no stale values.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = nn.Linear(2, 1)
        >>> apply_mask(layer, "weight", torch.tensor([[True, False]]))
        >>> apply_mask(layer, "weight", torch.tensor([[False, True]]))
        >>> get_mask(layer).tolist()
        [[False, False]]
    """
    current = getattr(module, name)
    if keep.shape != current.shape:
        raise ValueError(f"mask shape {tuple(keep.shape)} does not match {name} shape {tuple(current.shape)}")
    keep = keep.to(device=current.device, dtype=torch.bool)
    existing = get_mask(module, name)
    if existing is not None:
        existing.logical_and_(keep)
        mask = existing
    else:
        parametrize.register_parametrization(module, name, PruningMask(keep), unsafe=True)
        mask = get_mask(module, name)
        assert mask is not None
    with torch.no_grad():
        original = module.parametrizations[name].original  # type: ignore[union-attr,index]
        original.masked_fill_(~mask, 0.0)


def iter_masks(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    """Yield ``(qualified_name, module, tensor_name, mask)`` for every pruned tensor.

    Example:
        >>> from torch import nn
        >>> list(iter_masks(nn.Linear(2, 2)))
        []
    """
    for qual, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for tensor_name in list(module.parametrizations.keys()):  # type: ignore[union-attr]
            mask = get_mask(module, tensor_name)
            if mask is not None:
                yield qual, module, tensor_name, mask


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every pruning mask of ``model``, keyed ``"module.tensor"`` (e.g. ``"fc1.weight"``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(2, 2))
        >>> apply_mask(m[0], "weight", torch.eye(2, dtype=torch.bool))
        >>> list(masks(m))
        ['0.weight']
    """
    return {f"{qual}.{tensor}" if qual else tensor: mask for qual, _, tensor, mask in iter_masks(model)}


def sparsity(model: nn.Module) -> float:
    """Fraction of pruned entries over all pruned tensors (0.0 when nothing is pruned).

    Example:
        >>> from torch import nn
        >>> sparsity(nn.Linear(2, 2))
        0.0
    """
    total = zeros = 0
    for _, _, _, mask in iter_masks(model):
        total += mask.numel()
        zeros += int((~mask).sum())
    return zeros / total if total else 0.0


def restore_masks(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> int:
    """Register empty masks so that a pruned model's ``state_dict`` loads into a fresh model.

    Call before ``model.load_state_dict(state_dict)``; returns how many masks it added.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> apply_mask(a, "weight", torch.eye(2, dtype=torch.bool))
        >>> restore_masks(b, a.state_dict())
        1
        >>> _ = b.load_state_dict(a.state_dict()); bool(torch.equal(a.weight, b.weight))
        True
    """
    added = 0
    modules = dict(model.named_modules())
    for key, value in state_dict.items():
        if not key.endswith(".mask"):
            continue
        if key.startswith("parametrizations."):
            owner, rest = "", key[len("parametrizations.") :]
        elif ".parametrizations." in key:
            owner, _, rest = key.rpartition(".parametrizations.")
        else:
            continue
        tensor_name = rest.split(".")[0]
        module = modules.get(owner)
        if module is None or get_mask(module, tensor_name) is not None:
            continue
        parametrize.register_parametrization(
            module, tensor_name, PruningMask(torch.ones_like(value, dtype=torch.bool)), unsafe=True
        )
        added += 1
    return added


def set_mask(module: nn.Module, name: str, keep: torch.Tensor) -> None:
    """Set the mask of ``module.<name>`` to exactly ``keep``: entries may come back (sparse training).

    Unlike :func:`apply_mask` (pruning: masks only shrink), this is for methods
    that move connections around (sparse momentum, SET, RigL). Entries that
    come back start from exactly zero; entries that go are zeroed in the
    stored original too, so no stale value survives in either direction.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = nn.Linear(2, 1)
        >>> set_mask(layer, "weight", torch.tensor([[True, False]]))
        >>> set_mask(layer, "weight", torch.tensor([[False, True]]))
        >>> get_mask(layer).tolist(), layer.weight[0, 1].item()
        ([[False, True]], 0.0)
    """
    current = getattr(module, name)
    if keep.shape != current.shape:
        raise ValueError(f"mask shape {tuple(keep.shape)} does not match {name} shape {tuple(current.shape)}")
    keep = keep.to(device=current.device, dtype=torch.bool)
    existing = get_mask(module, name)
    if existing is None:
        apply_mask(module, name, keep)
        return
    with torch.no_grad():
        original = module.parametrizations[name].original  # type: ignore[union-attr,index]
        original.masked_fill_(keep != existing, 0.0)  # grown entries start at zero; dropped ones leave no value
        existing.copy_(keep)
