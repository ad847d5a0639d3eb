"""Parameter, nonzero and byte counts per layer.

Counts use each layer's *effective* tensors: for a parametrized weight (a
pruning mask, a codebook) that is the tensor the forward pass uses, so zeros
made by a mask count as zeros. Tensors shared by several modules are counted
once, at their first owner. Dense bytes are what the tensor would take as
fp32 with no compression: the denominator of every compression ratio.

Example:
    >>> from torch import nn
    >>> [s.params for s in layer_stats(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))]
    [15, 8]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

FP32_BYTES = 4


@dataclass(frozen=True)
class LayerStats:
    """Counts for the tensors a module owns directly (not its children's).

    Example:
        >>> from torch import nn
        >>> s = layer_stats(nn.Linear(2, 2))[0]
        >>> (s.name, s.kind, s.params, s.dense_bytes)
        ('', 'Linear', 6, 24)
    """

    name: str
    kind: str
    params: int
    nonzeros: int
    dense_bytes: int

    @property
    def sparsity(self) -> float:
        """Fraction of zeros among the parameters (0.0 for a layer without any)."""
        return 1.0 - self.nonzeros / self.params if self.params else 0.0


def _is_parametrization_internals(name: str, module: nn.Module) -> bool:
    # The ParametrizationList under ``layer.parametrizations`` holds the original tensor and the
    # parametrization modules; the layer itself already reports the effective tensor.
    return isinstance(module, parametrize.ParametrizationList) or "parametrizations" in name.split(".")


def own_tensors(module: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The (name, effective tensor) pairs a module owns directly: plain and parametrized parameters.

    Example:
        >>> from torch import nn
        >>> [n for n, _ in own_tensors(nn.Linear(2, 2))]
        ['weight', 'bias']
    """
    for name, param in module._parameters.items():
        if param is not None:
            yield name, param
    if parametrize.is_parametrized(module):
        for name in module.parametrizations:  # type: ignore[union-attr]
            yield name, getattr(module, name)


def layer_stats(model: nn.Module) -> list[LayerStats]:
    """One :class:`LayerStats` per module that owns parameters, in module order.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Linear(4, 2)
        >>> with torch.no_grad():
        ...     _ = m.weight[0].zero_()
        >>> layer_stats(m)[0].nonzeros
        6
    """
    seen: set[int] = set()
    out: list[LayerStats] = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if _is_parametrization_internals(name, module):
                continue
            params = nonzeros = 0
            for _, tensor in own_tensors(module):
                # Tied weights are counted once; parametrized tensors are fresh each access.
                key = id(tensor)
                if isinstance(tensor, nn.Parameter):
                    if key in seen:
                        continue
                    seen.add(key)
                params += tensor.numel()
                nonzeros += int(torch.count_nonzero(tensor.detach()))
            if params:
                out.append(LayerStats(name, type(module).__name__, params, nonzeros, params * FP32_BYTES))
    return out


def count_parameters(model: nn.Module) -> int:
    """Total parameters (effective tensors, tied weights once).

    Example:
        >>> from torch import nn
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(s.params for s in layer_stats(model))


def count_nonzeros(model: nn.Module) -> int:
    """Total nonzero parameters (a pruning mask's zeros count as zeros).

    Example:
        >>> from torch import nn
        >>> m = nn.Linear(3, 2)
        >>> _ = nn.init.zeros_(m.bias)
        >>> count_nonzeros(m)
        6
    """
    return sum(s.nonzeros for s in layer_stats(model))
