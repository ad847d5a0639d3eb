"""What every factorization method provides to the shared driver (``factorize_``'s handler).

A method knows which layers it applies to, the ranks it can give a layer
(ordered by cost), how to read a rank from its config, how to build and fit
the replacement, and how its surgery entry looks. The driver does the rest:
picking layers, measuring costs, choosing ranks, recording surgery, reporting.

Example:
    >>> from torch import nn
    >>> from deepshrink.factorize.svd import SVD_METHOD
    >>> SVD_METHOD.candidates(nn.Linear(6, 4))[-1]
    4
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .config import FactorizeConfig

Rank = Any  # an int, or a tuple for Tucker-2 / Fire


@dataclass
class LayerData:
    """What the driver measured for one layer: an example input (batch 1) and calibration statistics.

    Example:
        >>> LayerData().example is None
        True
    """

    example: Tensor | None = None
    inputs: Tensor | None = None  # calibration inputs (conv feature maps), for least-squares fits
    covariance: Tensor | None = None  # E[x x^T] of a Linear's inputs, for whitened SVD
    extra: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base of a factorization method; subclasses override what differs.

    Example:
        >>> Method().needs_calibration(None)
        False
    """

    op: str = ""
    label: str = ""

    def reason_not(self, module: nn.Module, config: FactorizeConfig) -> str | None:
        """None when the method applies to ``module``; else why not (``""``: not its kind of layer at all)."""
        return ""

    def candidates(self, module: nn.Module) -> list[Rank]:
        """Every rank this layer can take, cheapest first; the last one reproduces the layer exactly."""
        raise NotImplementedError

    def config_rank(self, module: nn.Module, config: FactorizeConfig) -> Rank | None:
        """The rank the config names directly (rank, energy, VBMF), or None when it gives a ratio."""
        raise NotImplementedError

    def build(self, module: nn.Module, rank: Rank) -> nn.Module:
        """The replacement's structure (weights not fitted), on the module's device."""
        raise NotImplementedError

    def fit(self, module: nn.Module, rank: Rank, config: FactorizeConfig, data: LayerData) -> nn.Module:
        """The fitted replacement of ``module`` at ``rank``."""
        raise NotImplementedError

    def entry(self, name: str, module: nn.Module, rank: Rank) -> dict[str, Any]:
        """The surgery-log entry of this replacement."""
        raise NotImplementedError

    def needs_calibration(self, config: FactorizeConfig | None) -> bool:
        """Whether fitting uses calibration statistics of the layer's inputs."""
        return False

    def cost(self, module: nn.Module, rank: Rank | None, example: Tensor | None) -> tuple[int, int | None]:
        """Parameters and MACs (None without an example input) of the layer at ``rank`` (None: the original).

        Built on the meta device (no memory); MACs by :func:`layer_macs`, which
        agrees with deepshrink.analysis's counter on these layers (tested) and
        is fast enough for rank searches.
        """
        meta = module if rank is None else self.build(_meta_like(module), rank)
        params = sum(p.numel() for p in meta.parameters())
        if example is None:
            return params, None
        return params, layer_macs(meta, tuple(example.shape))[0]


def _meta_like(module: nn.Module) -> nn.Module:
    """A shape-only copy of a layer (its weight on the meta device), cheap for large layers."""
    meta = copy.copy(module)
    meta._parameters = {k: (None if v is None else nn.Parameter(torch.empty(v.shape, dtype=v.dtype, device="meta"), v.requires_grad))
                        for k, v in module._parameters.items()}
    return meta


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def layer_macs(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """MACs and output shape of a Linear, Embedding, Conv2d, a Sequential of them, or a Fire module.

    Example:
        >>> layer_macs(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10))
        (21600, (1, 8, 10, 10))
    """
    from .layers import FireConv2d, _pair

    if isinstance(module, nn.Sequential):
        total = 0
        for sub in module:
            macs, shape = layer_macs(sub, shape)
            total += macs
        return total, shape
    if isinstance(module, FireConv2d):
        squeeze, sq_shape = layer_macs(module.squeeze, shape)
        expand, out_shape = layer_macs(module.expand, sq_shape)
        b, _, h, w = out_shape
        one = b * h * w * module.expand1x1.in_channels * module.expand1x1.out_channels
        return squeeze + expand + one, (b, module.expand.out_channels + module.expand1x1.out_channels, h, w)
    if isinstance(module, nn.Linear):
        rows = int(torch.Size(shape[:-1]).numel())
        return rows * module.in_features * module.out_features, (*shape[:-1], module.out_features)
    if isinstance(module, nn.Embedding):
        return 0, (*shape, module.embedding_dim)
    if isinstance(module, nn.Conv2d):
        (kh, kw), (sh, sw), (dh, dw) = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
        b, _, h, w = shape
        if module.padding == "same":
            ho, wo = h, w
        else:
            ph, pw = (0, 0) if module.padding == "valid" else _pair(module.padding)
            ho, wo = _conv_out(h, kh, sh, ph, dh), _conv_out(w, kw, sw, pw, dw)
        per = (module.in_channels // module.groups) * kh * kw
        return b * ho * wo * module.out_channels * per, (b, module.out_channels, ho, wo)
    raise TypeError(f"no MAC formula for {type(module).__name__}")


def rank_at_most(method: Method, module: nn.Module, budget: float, target: str, example: Tensor | None) -> Rank | None:
    """The largest candidate rank whose cost (params or MACs) is at most ``budget``; None when none is.

    Costs grow with the rank, so a binary search over the candidates does.

    Example:
        >>> from torch import nn
        >>> from deepshrink.factorize.svd import SVD_METHOD
        >>> rank_at_most(SVD_METHOD, nn.Linear(100, 100), 0.5 * 10100, "params", None)
        24
    """
    cands = method.candidates(module)
    idx = 1 if target == "macs" else 0

    def cost(i: int) -> float:
        c = method.cost(module, cands[i], example)[idx]
        return float(c) if c is not None else float("inf")

    lo, hi = 0, len(cands) - 1
    if cost(0) > budget:
        return None
    while lo < hi:  # invariant: cands[lo] fits
        mid = (lo + hi + 1) // 2
        if cost(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return cands[lo]





def conv2d_reason(module: nn.Module, *, kernel: bool = True) -> str | None:
    """None when ``module`` is a plain Conv2d these methods can split; else why not (``""``: not a conv).

    ``kernel=True`` also asks for a kernel larger than 1x1.

    Example:
        >>> conv2d_reason(nn.Conv2d(4, 4, 3, groups=2))
        'a grouped convolution (groups=2)'
    """
    if not isinstance(module, nn.Conv2d):
        return ""
    if module.groups != 1:
        return f"a grouped convolution (groups={module.groups})"
    if kernel and tuple(module.kernel_size) == (1, 1):
        return "a 1x1 convolution (no spatial kernel to split)"
    return None
__all__ = ["LayerData", "Method", "Rank", "conv2d_reason", "layer_macs", "rank_at_most"]
