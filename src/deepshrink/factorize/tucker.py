"""Tucker-2 decomposition of a convolution over its two channel modes (Kim et al. 2016).

``W[n, c, y, x] ~= sum_{o, r} U_out[n, o] core[o, r, y, x] U_in[c, r]``: a 1x1
convolution projects the C input channels onto ``r_in`` directions, a KxK
core convolution maps them to ``r_out``, and a 1x1 convolution expands to the
N outputs. Fitted by HOSVD (leading singular vectors of each unfolding)
refined by HOOI sweeps; ranks from a ratio, from energy, or from EVBMF.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(6, 8, 3, padding=1)
    >>> t = fit_tucker2(conv, (6, 8))
    >>> x = torch.randn(1, 6, 9, 9)
    >>> torch.allclose(t(x), conv(x), atol=1e-5)
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .config import FactorizeConfig, Tucker
from .layers import TuckerConv2d
from .method import LayerData, Method, Rank, conv2d_reason
from .svd import energy_rank
from .vbmf import evbmf_rank, unfold


def _leading(m: Tensor, r: int) -> Tensor:
    """The ``r`` leading left singular vectors of a wide matrix, from the eigenvectors of its (small) Gram matrix."""
    evals, vecs = torch.linalg.eigh(m @ m.T)
    return vecs.flip(-1)[:, :r]


@torch.no_grad()
def tucker2(weight: Tensor, ranks: tuple[int, int], iterations: int = 10) -> tuple[Tensor, Tensor, Tensor]:
    """``(u_in [C, r_in], core [r_out, r_in, Kh, Kw], u_out [N, r_out])`` of a conv weight (float64).

    Example:
        >>> u_in, core, u_out = tucker2(torch.randn(8, 4, 3, 3), (2, 3))
        >>> tuple(u_in.shape), tuple(core.shape), tuple(u_out.shape)
        ((4, 2), (3, 2, 3, 3), (8, 3))
    """
    w = weight.double()
    r_in, r_out = ranks
    u_out = _leading(unfold(w, 0), r_out)
    u_in = _leading(unfold(w, 1), r_in)
    full = r_in >= w.shape[1] and r_out >= w.shape[0]
    for _ in range(0 if full else iterations):  # at full ranks HOSVD is already exact
        # HOOI: each factor is the leading subspace of W projected on the other factor.
        u_out = _leading(unfold(torch.einsum("ncyx,cr->nryx", w, u_in), 0), r_out)
        u_in = _leading(unfold(torch.einsum("ncyx,no->ocyx", w, u_out), 1), r_in)
    core = torch.einsum("ncyx,no,cr->oryx", w, u_out, u_in)
    return u_in, core, u_out


@torch.no_grad()
def fit_tucker2(conv: nn.Conv2d, ranks: tuple[int, int], iterations: int = 10) -> TuckerConv2d:
    """The Tucker-2 replacement of ``conv`` at ``ranks = (r_in, r_out)``.

    Example:
        >>> fit_tucker2(nn.Conv2d(4, 8, 3), (2, 3))[1].weight.shape
        torch.Size([3, 2, 3, 3])
    """
    out = TuckerConv2d.like(conv, ranks)
    u_in, core, u_out = tucker2(conv.weight.detach(), ranks, iterations)
    out[0].weight.copy_(u_in.T[:, :, None, None])
    out[1].weight.copy_(core)
    out[2].weight.copy_(u_out[:, :, None, None])
    if conv.bias is not None:
        out[2].bias.copy_(conv.bias.detach())
    return out


def tucker_ranks(conv: nn.Conv2d, config: Tucker) -> tuple[int, int] | None:
    """The ``(r_in, r_out)`` a config names for ``conv``: fixed, by energy, or by EVBMF (None for a ratio).

    Example:
        >>> tucker_ranks(nn.Conv2d(4, 8, 3), Tucker(ranks=(16, 2)))
        (4, 2)
    """
    c, n = conv.in_channels, conv.out_channels
    w = conv.weight.detach().double()
    if config.ranks is not None:
        return min(config.ranks[0], c), min(config.ranks[1], n)
    if config.ratio is not None:
        return None
    if config.energy is not None:
        return (energy_rank(torch.linalg.svdvals(unfold(w, 1)), config.energy),
                energy_rank(torch.linalg.svdvals(unfold(w, 0)), config.energy))
    return min(evbmf_rank(unfold(w, 1)), c), min(evbmf_rank(unfold(w, 0)), n)


class _TuckerMethod(Method):
    op = "tucker2_conv"
    label = "tucker"

    def reason_not(self, module: nn.Module, config: FactorizeConfig) -> str | None:
        return conv2d_reason(module)

    def candidates(self, module: nn.Module) -> list[Rank]:
        c, n = module.in_channels, module.out_channels
        steps = max(c, n)
        out: list[Rank] = []
        for k in range(1, steps + 1):
            # Both ranks keep the same fraction of their channels, as in Kim et al.'s ratio setting.
            pair = (max(1, math.ceil(k * c / steps)), max(1, math.ceil(k * n / steps)))
            if not out or out[-1] != pair:
                out.append(pair)
        return out

    def config_rank(self, module: nn.Module, config: FactorizeConfig) -> Rank | None:
        assert isinstance(config, Tucker)
        return tucker_ranks(module, config)

    def build(self, module: nn.Module, rank: Rank) -> nn.Module:
        return TuckerConv2d.like(module, tuple(rank))

    def fit(self, module: nn.Module, rank: Rank, config: FactorizeConfig, data: LayerData) -> nn.Module:
        iterations = config.iterations if isinstance(config, Tucker) else 10
        return fit_tucker2(module, tuple(rank), iterations)

    def entry(self, name: str, module: nn.Module, rank: Rank) -> dict[str, Any]:
        return {"op": self.op, "module": name, "ranks": [int(rank[0]), int(rank[1])]}


TUCKER_METHOD = _TuckerMethod()

__all__ = ["TUCKER_METHOD", "fit_tucker2", "tucker2", "tucker_ranks"]
