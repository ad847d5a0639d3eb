"""CP decomposition of a convolution into four small convolutions (Lebedev et al. 2015).

``W[n, c, y, x] ~= sum_r A_n[n, r] A_c[c, r] A_y[y, r] A_x[x, r]``: a 1x1 conv
(C -> R), a depthwise Kx1 and a depthwise 1xK conv over the R channels, and a
1x1 conv (R -> N). The factors come from alternating least squares from an SVD
start (:func:`cp_als`). At ``R >= min(C, N) * Kh * Kw`` an exact decomposition
is known in closed form (one rank-one term per input or output channel and
kernel tap) and is used instead.

Why not tensorly's ``parafac``: it forms the Khatri-Rao product of three
factors explicitly, ``C*N*K x R`` values for a kernel mode, which is 4.8 GB for
a 512x512x3x3 VGG-16 weight at a third of its MACs (rank 764): a benchmark
using it was killed for lack of memory. :func:`cp_als` contracts the weight with one
factor at a time (``N*K*K x R`` values, 28 MB there), and on ResNet-18 weights
it is several times faster than tensorly at the same or lower error for the
same sweeps (BENCHMARKS.md, section ``factorize``; benchmarks/bench_factorize_speed.py).

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(3, 4, 3, padding=1)
    >>> f = fit_cp(conv, 3 * 3 * 3)
    >>> x = torch.randn(1, 3, 8, 8)
    >>> torch.allclose(f(x), conv(x), atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .config import CP, FactorizeConfig
from .layers import CPConv2d
from .method import LayerData, Method, Rank, conv2d_reason


def full_cp_rank(conv: nn.Conv2d) -> int:
    """The rank at which the closed-form exact decomposition exists: ``min(C, N) * Kh * Kw``.

    Example:
        >>> full_cp_rank(nn.Conv2d(3, 8, (3, 5)))
        45
    """
    kh, kw = conv.kernel_size
    return min(conv.in_channels, conv.out_channels) * kh * kw


def _exact_factors(w: Tensor, rank: int) -> list[Tensor]:
    """Exact CP factors ``[A_n, A_c, A_y, A_x]``: one term per (smaller channel axis, y, x), zero-padded to ``rank``."""
    n, c, kh, kw = w.shape
    small, axis = (c, 1) if c <= n else (n, 0)
    terms = small * kh * kw
    idx = torch.arange(terms)
    ch, y, x = idx // (kh * kw), (idx // kw) % kh, idx % kw
    if axis == 1:  # one term per (c, y, x): A_n column = W[:, c, y, x]
        a_n = w[:, ch, y, x]
        a_c = torch.zeros(c, terms, dtype=w.dtype)
        a_c[ch, idx] = 1
    else:  # one term per (n, y, x): A_c column = W[n, :, y, x]
        a_c = w[ch, :, y, x].T
        a_n = torch.zeros(n, terms, dtype=w.dtype)
        a_n[ch, idx] = 1
    a_y = torch.zeros(kh, terms, dtype=w.dtype)
    a_y[y, idx] = 1
    a_x = torch.zeros(kw, terms, dtype=w.dtype)
    a_x[x, idx] = 1
    factors = [a_n, a_c, a_y, a_x]
    return [torch.cat([f, f.new_zeros(f.shape[0], rank - terms)], 1) for f in factors]


def _svd_start(w: Tensor, rank: int, seed: int) -> list[Tensor]:
    """Each mode's leading left singular vectors, padded with random columns where the mode is smaller than ``rank``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for mode in range(w.dim()):
        u = torch.linalg.svd(w.movedim(mode, 0).reshape(w.shape[mode], -1), full_matrices=False)[0][:, :rank]
        if u.shape[1] < rank:
            u = torch.cat([u, torch.randn(w.shape[mode], rank - u.shape[1], generator=g, dtype=w.dtype)], 1)
        out.append(u)
    return out


def _solve(gram: Tensor, rhs: Tensor) -> Tensor:
    """``rhs @ gram^-1`` (the normal equations of one ALS step); least squares where ``gram`` is singular."""
    try:
        return torch.linalg.solve(gram, rhs.T).T
    except RuntimeError:  # a rank-deficient start (e.g. a zero weight): fall back to the pseudo-inverse
        return rhs @ torch.linalg.pinv(gram)


def cp_als(weight: Tensor, rank: int, iterations: int = 100, tol: float = 1e-7, seed: int = 0) -> list[Tensor]:
    """CP factors ``[A_n, A_c, A_y, A_x]`` (float64) of a 4-way weight by alternating least squares.

    Each step solves one factor exactly given the others; the weight is
    contracted with one factor at a time, so memory stays ``O(N*Kh*Kw*R)``.
    Stops after ``iterations`` sweeps or when the relative error changes by less than ``tol``.

    Example:
        >>> w = torch.einsum("nr,cr,yr,xr->ncyx", *(torch.randn(d, 2) for d in (5, 4, 3, 3)))
        >>> f = cp_als(w, 2, iterations=200)
        >>> float((torch.einsum("nr,cr,yr,xr->ncyx", *f) - w).norm() / w.norm()) < 1e-4
        True
    """
    w = weight.detach().double().cpu()
    a, b, y, x = _svd_start(w, rank, seed)
    norm2 = float(w.pow(2).sum())
    prev: float | None = None
    for _ in range(iterations):
        t = torch.einsum("ncyx,cr->nyxr", w, b)
        a = _solve((b.T @ b) * (y.T @ y) * (x.T @ x), torch.einsum("nyxr,yr,xr->nr", t, y, x))
        t = torch.einsum("ncyx,nr->cyxr", w, a)
        b = _solve((a.T @ a) * (y.T @ y) * (x.T @ x), torch.einsum("cyxr,yr,xr->cr", t, y, x))
        y = _solve((a.T @ a) * (b.T @ b) * (x.T @ x), torch.einsum("cyxr,cr,xr->yr", t, b, x))
        mx = torch.einsum("cyxr,cr,yr->xr", t, b, y)
        gram = (a.T @ a) * (b.T @ b) * (y.T @ y)
        x = _solve(gram, mx)
        # ||W - model||^2 from the last step's products, without building the model.
        err2 = norm2 - 2 * float((mx * x).sum()) + float((gram * (x.T @ x)).sum())
        err = max(err2, 0.0) ** 0.5 / max(norm2, 1e-300) ** 0.5
        if prev is not None and abs(prev - err) < tol:
            break
        prev = err
    return [a, b, y, x]


def cp_factors(weight: Tensor, rank: int, iterations: int = 100, tol: float = 1e-7, seed: int = 0) -> list[Tensor]:
    """CP factors ``[A_n, A_c, A_y, A_x]`` (float64) of a conv weight, scales balanced across the four.

    Example:
        >>> [tuple(f.shape) for f in cp_factors(torch.randn(4, 3, 3, 3), 5, iterations=5)]
        [(4, 5), (3, 5), (3, 5), (3, 5)]
    """
    w = weight.detach().double().cpu()
    n, c, kh, kw = w.shape
    if rank >= min(c, n) * kh * kw:
        factors = _exact_factors(w, rank)
    else:
        factors = cp_als(w, rank, iterations, tol, seed)
    # Give each factor the same column norm (the geometric mean): same product, better-scaled training.
    norms = torch.stack([f.norm(dim=0) for f in factors])  # [4, rank]
    scale = norms.clamp(min=1e-30).log().mean(0).exp()
    return [torch.where(nrm > 0, f / nrm.clamp(min=1e-30) * scale, f) for f, nrm in zip(factors, norms)]


@torch.no_grad()
def fit_cp(conv: nn.Conv2d, rank: int, iterations: int = 100, tol: float = 1e-7, seed: int = 0) -> CPConv2d:
    """The four-convolution CP replacement of ``conv`` at ``rank``.

    Example:
        >>> fit_cp(nn.Conv2d(4, 6, 3), 5, iterations=3)[1].weight.shape
        torch.Size([5, 1, 3, 1])
    """
    out = CPConv2d.like(conv, rank)
    a_n, a_c, a_y, a_x = (f.to(conv.weight.device) for f in cp_factors(conv.weight, rank, iterations, tol, seed))
    out[0].weight.copy_(a_c.T[:, :, None, None])
    out[1].weight.copy_(a_y.T[:, None, :, None])
    out[2].weight.copy_(a_x.T[:, None, None, :])
    out[3].weight.copy_(a_n[:, :, None, None])
    if conv.bias is not None:
        out[3].bias.copy_(conv.bias.detach())
    return out


class _CPMethod(Method):
    op = "cp_conv"
    label = "cp"

    def reason_not(self, module: nn.Module, config: FactorizeConfig) -> str | None:
        return conv2d_reason(module)

    def candidates(self, module: nn.Module) -> list[Rank]:
        return list(range(1, full_cp_rank(module) + 1))

    def config_rank(self, module: nn.Module, config: FactorizeConfig) -> Rank | None:
        assert isinstance(config, CP)
        return None if config.rank is None else min(config.rank, full_cp_rank(module))

    def build(self, module: nn.Module, rank: Rank) -> nn.Module:
        return CPConv2d.like(module, int(rank))

    def fit(self, module: nn.Module, rank: Rank, config: FactorizeConfig, data: LayerData) -> nn.Module:
        assert isinstance(config, CP)
        return fit_cp(module, int(rank), config.iterations, config.tol, config.seed)

    def entry(self, name: str, module: nn.Module, rank: Rank) -> dict[str, Any]:
        return {"op": self.op, "module": name, "rank": int(rank)}


CP_METHOD = _CPMethod()

__all__ = ["CP_METHOD", "cp_als", "cp_factors", "fit_cp", "full_cp_rank"]
