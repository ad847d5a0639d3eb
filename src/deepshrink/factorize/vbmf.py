"""Empirical variational Bayesian matrix factorization (EVBMF): a rank from the data alone.

Nakajima, Sugiyama, Babacan and Tomioka (JMLR 2013) give the global solution
of fully empirical VB matrix factorization in closed form: with the noise
variance estimated by a one-dimensional minimisation, the retained components
are exactly the singular values above a threshold. Kim et al. (2016) use the
rank it finds on each channel unfolding of a convolution's weight as the
Tucker-2 ranks.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> low = torch.randn(60, 5, generator=g) @ torch.randn(5, 80, generator=g)
    >>> evbmf_rank(low + 0.01 * torch.randn(60, 80, generator=g))
    5
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    return 0.5 * (x - (1 + alpha) + np.sqrt(np.maximum((x - (1 + alpha)) ** 2 - 4 * alpha, 0.0)))


def _objective(sigma2: float, L: int, M: int, s: np.ndarray, residual: float, xubar: float) -> float:
    """The EVB free energy as a function of the noise variance (Nakajima et al. 2013, Eq. 21)."""
    H = len(s)
    alpha = L / M
    x = s**2 / (M * sigma2)
    z1 = x[x > xubar]
    z2 = x[x <= xubar]
    tau_z1 = _tau(z1, alpha)
    term1 = np.sum(z2 - np.log(z2))
    term2 = np.sum(z1 - tau_z1)
    term3 = np.sum(np.log((tau_z1 + 1) / z1))
    term4 = alpha * np.sum(np.log(tau_z1 / alpha + 1))
    return float(term1 + term2 + term3 + term4 + residual / (M * sigma2) + (L - H) * np.log(sigma2))


def evbmf_rank(matrix: Tensor) -> int:
    """The number of components EVBMF keeps for ``matrix`` (at least 1).

    Example:
        >>> evbmf_rank(torch.eye(4))
        4
    """
    y = matrix.detach().double().cpu().numpy()
    if y.shape[0] > y.shape[1]:
        y = y.T
    L, M = y.shape  # L <= M
    s = np.linalg.svd(y, compute_uv=False)
    if L < 2 or not np.isfinite(s).all() or s[0] == 0.0:
        return 1
    H = L
    alpha = L / M
    tauubar = 2.5129 * math.sqrt(alpha)
    xubar = (1 + tauubar) * (1 + alpha / tauubar)
    residual = 0.0
    # Bounds of the noise variance (Nakajima et al. 2013, Sec. 3.4).
    eh_ub = int(min(math.ceil(L / (1 + alpha)) - 1, H)) - 1
    eh_ub = max(0, min(eh_ub, L - 2))
    upper = (np.sum(s**2) + residual) / (L * M)
    lower = max(s[eh_ub + 1] ** 2 / (M * xubar), np.mean(s[eh_ub + 1 :] ** 2) / M)
    lower = max(lower, upper * 1e-12)
    if lower >= upper:
        return L
    res = minimize_scalar(_objective, args=(L, M, s, residual, xubar), bounds=(lower, upper), method="bounded")
    sigma2 = float(res.x)
    threshold = math.sqrt(M * sigma2 * (1 + tauubar) * (1 + alpha / tauubar))
    return max(1, int(np.sum(s > threshold)))


def unfold(weight: Tensor, mode: int) -> Tensor:
    """The mode-``mode`` unfolding of a tensor: that axis becomes the rows.

    Example:
        >>> unfold(torch.zeros(2, 3, 4), 1).shape
        torch.Size([3, 8])
    """
    return weight.movedim(mode, 0).reshape(weight.shape[mode], -1)


__all__ = ["evbmf_rank", "unfold"]
