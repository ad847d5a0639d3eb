"""Truncated SVD of Linear and Embedding layers, plain or activation-aware (whitened).

Plain: ``W = U S V^T`` truncated to ``r`` terms minimises the weight error.
Whitened: with ``C = E[x x^T]`` the covariance of the layer's inputs on real
data and ``C = L L^T``, truncating the SVD of ``W L`` and multiplying back by
``L^-1`` minimises the *output* error ``E ||(W - W_r) x||^2`` instead (the
idea of SVD-LLM, Wang et al. 2024). Either way the full rank is exact.

Example:
    >>> import torch
    >>> from torch import nn
    >>> lin = nn.Linear(6, 5)
    >>> f = fit_linear(lin, 5)
    >>> x = torch.randn(3, 6)
    >>> torch.allclose(f(x), lin(x), atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .config import SVD, FactorizeConfig
from .layers import FactoredEmbedding, FactoredLinear
from .method import LayerData, Method, Rank


def energy_rank(singular_values: Tensor, energy: float) -> int:
    """The smallest rank whose leading singular values hold ``energy`` of the total squared sum.

    Example:
        >>> energy_rank(torch.tensor([3.0, 1.0, 0.0]), 0.9)
        1
    """
    sq = singular_values.double().pow(2)
    total = float(sq.sum())
    if total == 0.0:
        return 1
    cum = torch.cumsum(sq, 0) / total
    return int(min(int((cum < energy - 1e-12).sum()) + 1, len(sq)))


def _whitener(cov: Tensor) -> tuple[Tensor, Tensor]:
    """``L`` and ``L^-1`` with ``L L^T = C`` (symmetric square root; tiny eigenvalues floored so it inverts)."""
    evals, q = torch.linalg.eigh(cov.double())
    floor = max(float(evals.max()), 1e-30) * 1e-10
    root = evals.clamp(min=floor).sqrt()
    return q * root, (q / root).T


@torch.no_grad()
def fit_linear(linear: nn.Linear, rank: int, covariance: Tensor | None = None) -> FactoredLinear:
    """Two Linears whose product is the rank-``rank`` SVD of ``linear`` (whitened by ``covariance`` if given).

    Example:
        >>> fit_linear(nn.Linear(8, 4), 2)[1].weight.shape
        torch.Size([4, 2])
    """
    w = linear.weight.detach().double()
    out = FactoredLinear.like(linear, rank)
    if covariance is not None:
        root, inv = _whitener(covariance.to(w.device))
        u, s, vh = torch.linalg.svd(w @ root, full_matrices=False)
        right = vh[:rank] @ inv
    else:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        right = vh[:rank]
    r = min(rank, s.numel())
    half = s[:r].sqrt()
    # Split the singular values evenly between the two factors: balanced scales train better.
    first = torch.zeros(rank, w.shape[1], dtype=w.dtype, device=w.device)
    second = torch.zeros(w.shape[0], rank, dtype=w.dtype, device=w.device)
    first[:r] = half[:, None] * right[:r]
    second[:, :r] = u[:, :r] * half
    out[0].weight.copy_(first)
    out[1].weight.copy_(second)
    if linear.bias is not None:
        out[1].bias.copy_(linear.bias.detach())
    return out


@torch.no_grad()
def fit_embedding(emb: nn.Embedding, rank: int) -> FactoredEmbedding:
    """An Embedding of width ``rank`` and a Linear back to the full width: the rank-``rank`` SVD of the table.

    Example:
        >>> e = nn.Embedding(20, 6)
        >>> f = fit_embedding(e, 6)
        >>> ids = torch.tensor([[1, 7, 19]])
        >>> torch.allclose(f(ids), e(ids), atol=1e-5)
        True
    """
    w = emb.weight.detach().double()
    out = FactoredEmbedding.like(emb, rank)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    r = min(rank, s.numel())
    half = s[:r].sqrt()
    table = torch.zeros(w.shape[0], rank, dtype=w.dtype, device=w.device)
    proj = torch.zeros(w.shape[1], rank, dtype=w.dtype, device=w.device)
    table[:, :r] = u[:, :r] * half
    proj[:, :r] = (half[:, None] * vh[:r]).T
    out[0].weight.copy_(table)
    out[1].weight.copy_(proj)
    return out


class _SVDMethod(Method):
    op = "svd"
    label = "svd"

    def reason_not(self, module: nn.Module, config: FactorizeConfig) -> str | None:
        if isinstance(module, nn.Linear):
            return None
        if isinstance(module, nn.Embedding):
            if not (isinstance(config, SVD) and config.embeddings):
                return "an Embedding (set embeddings: true to factor it)"
            if module.max_norm is not None:
                return "an Embedding with max_norm renormalises rows; its factored form would not"
            return None
        return ""

    def candidates(self, module: nn.Module) -> list[Rank]:
        rows, cols = module.weight.shape
        return list(range(1, min(rows, cols) + 1))

    def config_rank(self, module: nn.Module, config: FactorizeConfig) -> Rank | None:
        assert isinstance(config, SVD)
        full = self.candidates(module)[-1]
        if config.rank is not None:
            return min(config.rank, full)
        if config.energy is not None:
            s = torch.linalg.svdvals(module.weight.detach().double())
            return energy_rank(s, config.energy)
        return None

    def build(self, module: nn.Module, rank: Rank) -> nn.Module:
        if isinstance(module, nn.Embedding):
            return FactoredEmbedding.like(module, rank)
        return FactoredLinear.like(module, rank)

    def fit(self, module: nn.Module, rank: Rank, config: FactorizeConfig, data: LayerData) -> nn.Module:
        if isinstance(module, nn.Embedding):
            return fit_embedding(module, rank)
        return fit_linear(module, rank, data.covariance)

    def needs_calibration(self, config: FactorizeConfig | None) -> bool:
        return isinstance(config, SVD) and config.whiten

    def entry(self, name: str, module: nn.Module, rank: Rank) -> dict[str, Any]:
        op = "svd_embedding" if isinstance(module, nn.Embedding) else "svd_linear"
        return {"op": op, "module": name, "rank": int(rank)}


SVD_METHOD = _SVDMethod()

__all__ = ["SVD_METHOD", "energy_rank", "fit_embedding", "fit_linear"]
