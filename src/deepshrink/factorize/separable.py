"""Spatially separable approximation of a KxK convolution: Kx1 then 1xK (Jaderberg et al. 2014, scheme 2).

``W[n, c, y, x] ~= sum_k H[n, k, x] V[k, c, y]``. Reshaped to a matrix with
rows ``(c, y)`` and columns ``(n, x)``, the weight's best rank-R approximation
is a truncated SVD (Tai et al. 2016 give this closed form), so the fit is
exact at ``R = min(C * Kh, N * Kw)``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(3, 5, 3, padding=1)
    >>> f = fit_separable(conv, 9)
    >>> x = torch.randn(1, 3, 8, 8)
    >>> torch.allclose(f(x), conv(x), atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import FactorizeConfig, Separable
from .layers import SeparableConv2d
from .method import LayerData, Method, Rank, conv2d_reason


def full_separable_rank(conv: nn.Conv2d) -> int:
    """The rank at which the separable form is exact: ``min(C * Kh, N * Kw)``.

    Example:
        >>> full_separable_rank(nn.Conv2d(4, 8, 3))
        12
    """
    kh, kw = conv.kernel_size
    return min(conv.in_channels * kh, conv.out_channels * kw)


@torch.no_grad()
def fit_separable(conv: nn.Conv2d, rank: int) -> SeparableConv2d:
    """The Kx1 / 1xK replacement of ``conv`` with ``rank`` intermediate channels.

    Example:
        >>> fit_separable(nn.Conv2d(4, 6, 3), 2)[0].weight.shape
        torch.Size([2, 4, 3, 1])
    """
    out = SeparableConv2d.like(conv, rank)
    w = conv.weight.detach().double()
    n, c, kh, kw = w.shape
    m = w.permute(1, 2, 0, 3).reshape(c * kh, n * kw)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    r = min(rank, s.numel())
    half = s[:r].sqrt()
    vert = torch.zeros(rank, c * kh, dtype=w.dtype, device=w.device)
    horiz = torch.zeros(rank, n * kw, dtype=w.dtype, device=w.device)
    vert[:r] = (u[:, :r] * half).T
    horiz[:r] = half[:, None] * vh[:r]
    out[0].weight.copy_(vert.reshape(rank, c, kh, 1))
    out[1].weight.copy_(horiz.reshape(rank, n, kw).permute(1, 0, 2).reshape(n, rank, 1, kw))
    if conv.bias is not None:
        out[1].bias.copy_(conv.bias.detach())
    return out


class _SeparableMethod(Method):
    op = "separable_conv"
    label = "separable"

    def reason_not(self, module: nn.Module, config: FactorizeConfig) -> str | None:
        return conv2d_reason(module)

    def candidates(self, module: nn.Module) -> list[Rank]:
        return list(range(1, full_separable_rank(module) + 1))

    def config_rank(self, module: nn.Module, config: FactorizeConfig) -> Rank | None:
        assert isinstance(config, Separable)
        return None if config.rank is None else min(config.rank, full_separable_rank(module))

    def build(self, module: nn.Module, rank: Rank) -> nn.Module:
        return SeparableConv2d.like(module, int(rank))

    def fit(self, module: nn.Module, rank: Rank, config: FactorizeConfig, data: LayerData) -> nn.Module:
        return fit_separable(module, int(rank))

    def entry(self, name: str, module: nn.Module, rank: Rank) -> dict[str, Any]:
        return {"op": self.op, "module": name, "rank": int(rank)}


SEPARABLE_METHOD = _SeparableMethod()

__all__ = ["SEPARABLE_METHOD", "fit_separable", "full_separable_rank"]
