"""The EM core of product quantization (Stock et al. 2019): one codebook for a layer's sub-vectors.

A layer's weight is cut into sub-vectors ``w_i`` of ``d`` consecutive elements
(see :func:`weight_blocks`). Each sub-vector sits at a *position* ``p_i`` (which
``d`` inputs of the layer it multiplies) and carries a weight ``omega_i``. EM
finds ``k`` centroids ``c`` and one assignment ``a_i`` per sub-vector that
minimise

    J = sum_i omega_i (w_i - c_{a_i})^T G_{p_i} (w_i - c_{a_i})

where ``G_p = X_p^T X_p`` is the Gram matrix of the layer's input activations
restricted to position ``p`` (the *output* objective: the error each sub-vector
adds to the layer's output on real inputs), or the identity (plain k-means on
the weights). The cross terms between positions of one output are left out, as
the paper does, so that each sub-vector is assigned on its own.

- E-step: each sub-vector takes the centroid of least ``G_p``-weighted distance.
- M-step: each centroid is the weighted least-squares solution
  ``(sum omega_i G_{p_i}) c = sum omega_i G_{p_i} w_i`` over its members.

Both steps minimise ``J`` exactly given the other, so ``J`` never increases. An
empty cluster takes the sub-vector with the largest error (which lowers ``J`` at
the next E-step). ``damping`` adds ``damping * mean(diag G)`` to every ``G_p``
so that the M-step has a unique solution even for inputs that never fire (a
dead ReLU channel), which keeps those weights near their k-means value.

Example:
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> blocks = torch.randn(2, 100, 4, dtype=torch.float64)  # 2 positions x 100 sub-vectors of 4
    >>> result = pq_em(blocks, None, k=8, n_iter=20)
    >>> result.codebook.shape, result.codes.shape
    (torch.Size([8, 4]), torch.Size([2, 100]))
    >>> all(a >= b for a, b in zip(result.history, result.history[1:]))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

# Rows of the distance matrix computed at once: bounds memory to CHUNK x k doubles.
CHUNK = 1 << 15


@dataclass
class EMResult:
    """Centroids ``(k, d)``, codes ``(P, N)`` (int64), and ``J`` after each E-step.

    Example:
        >>> EMResult(torch.zeros(1, 2), torch.zeros(1, 3, dtype=torch.long), [0.0]).iterations
        1
    """

    codebook: Tensor
    codes: Tensor
    history: list[float] = field(default_factory=list)
    converged: bool = False
    total: float = 0.0  # sum_i omega_i w_i^T G w_i: J of the all-zero codebook, for relative errors

    @property
    def iterations(self) -> int:
        return len(self.history)

    @property
    def relative_error(self) -> float:
        """Final ``J`` over the energy of the weights under the same metric."""
        return self.history[-1] / self.total if self.history and self.total > 0 else 0.0


def weight_blocks(weight: Tensor, d: int, groups: int = 1) -> Tensor:
    """Sub-vectors of a ``(out, in, *kernel)`` weight as ``(positions, out // groups, d)``.

    Each output's flattened row (input channels x kernel positions, the order of
    ``F.unfold``) is cut into chunks of ``d``; chunk ``j`` of an output in group
    ``g`` is at position ``g * m + j`` with ``m = row_length / d``. Sub-vector
    ``i`` of the flat weight (elements ``i*d .. i*d+d-1``) is ``blocks_to_flat``'s
    inverse of this arrangement.

    Example:
        >>> w = torch.arange(12.0).reshape(3, 4)  # Linear(4, 3)
        >>> weight_blocks(w, 2)[1].tolist()  # the second chunk of every row
        [[2.0, 3.0], [6.0, 7.0], [10.0, 11.0]]
    """
    out = weight.shape[0]
    row = weight[0].numel() if out else 0
    if d < 1 or row % d != 0 or out % groups != 0:
        raise ValueError(f"block size {d} must divide the row length {row} and groups {groups} the outputs {out}")
    m = row // d
    blocks = weight.reshape(groups, out // groups, m, d).permute(0, 2, 1, 3)
    return blocks.reshape(groups * m, out // groups, d)


def blocks_to_flat(codes: Tensor, groups: int = 1) -> Tensor:
    """Codes arranged ``(positions, out // groups)`` back in flat sub-vector order (row-major weight).

    Example:
        >>> w = torch.arange(12.0).reshape(3, 4)
        >>> idx = torch.arange(6).reshape(2, 3)  # position-major numbering of the 6 sub-vectors
        >>> blocks_to_flat(idx).tolist()
        [0, 3, 1, 4, 2, 5]
    """
    positions, per_group = codes.shape
    m = positions // groups
    return codes.reshape(groups, m, per_group).permute(0, 2, 1).reshape(-1)


def _damped(grams: Tensor, damping: float) -> Tensor:
    d = grams.shape[-1]
    diag = torch.diagonal(grams, dim1=-2, dim2=-1)
    lam = damping * float(diag.mean()) if diag.numel() else 0.0
    if lam <= 0:
        lam = damping  # all-zero activations: fall back to a plain k-means metric
    return grams + lam * torch.eye(d, dtype=grams.dtype, device=grams.device)


def _init(blocks: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` distinct sub-vectors drawn at random (as kill-the-bits does), padded by repeats if fewer exist."""
    flat = blocks.reshape(-1, blocks.shape[-1])
    order = torch.randperm(flat.shape[0], generator=generator)
    chosen: list[Tensor] = []
    seen: set[bytes] = set()
    for start in range(0, flat.shape[0], 4 * k):
        for row in flat[order[start : start + 4 * k]]:
            key = row.cpu().numpy().tobytes()
            if key not in seen:
                seen.add(key)
                chosen.append(row)
                if len(chosen) == k:
                    return torch.stack(chosen).clone()
    while len(chosen) < k:  # fewer distinct sub-vectors than centroids: duplicates stay empty clusters
        chosen.append(chosen[len(chosen) % max(1, len(seen))] if chosen else flat[0])
    return torch.stack(chosen).clone()


def pq_em(
    blocks: Tensor,
    grams: Tensor | None,
    *,
    k: int,
    n_iter: int = 100,
    weights: Tensor | None = None,
    damping: float = 0.01,
    seed: int = 0,
    on_iter: Callable[[int, float], None] | None = None,
) -> EMResult:
    """Learn ``k`` centroids for ``blocks`` ``(P, N, d)`` by EM under the metric ``grams`` ``(P, d, d)``.

    ``grams=None`` is plain k-means on the weights (identity metric, no damping).
    ``weights`` ``(N,)`` weighs sub-vectors by row (e.g. token frequency of an
    embedding row). Runs in float64; stops early when no assignment changes.
    ``on_iter(iteration, J)`` reports progress.

    Example:
        >>> b = torch.tensor([[[0.0], [0.1], [5.0], [5.1]]], dtype=torch.float64)
        >>> r = pq_em(b, None, k=2, n_iter=10)
        >>> sorted(r.codebook.flatten().tolist())
        [0.05, 5.05]
    """
    if blocks.dim() != 3:
        raise ValueError(f"blocks must be (positions, sub-vectors, d); got shape {tuple(blocks.shape)}")
    P, N, d = blocks.shape
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if n_iter < 0:
        raise ValueError(f"n_iter={n_iter} must be >= 0")
    blocks = blocks.to(torch.float64)
    device = blocks.device
    if grams is None:
        metric = None
    else:
        if tuple(grams.shape) != (P, d, d):
            raise ValueError(f"grams must have shape {(P, d, d)}, got {tuple(grams.shape)}")
        metric = _damped(grams.to(device=device, dtype=torch.float64), damping)
    omega = torch.ones(N, dtype=torch.float64, device=device) if weights is None else weights.to(device, torch.float64)
    if omega.shape != (N,) or bool((omega <= 0).any()):
        raise ValueError(f"weights must be {N} positive numbers (one per sub-vector row)")

    # G w for every sub-vector, fixed during EM: the M-step's right-hand side and the E-step's cross term.
    gw = blocks if metric is None else torch.bmm(blocks, metric)
    wgw = (gw * blocks).sum(-1)  # (P, N): the constant of each sub-vector's distance
    total = float((wgw * omega).sum())
    gen = torch.Generator().manual_seed(seed)
    codebook = _init(blocks, k, gen).to(device)
    codes = torch.zeros(P, N, dtype=torch.long, device=device)
    err = torch.zeros(P, N, dtype=torch.float64, device=device)
    history: list[float] = []
    converged = False
    # sum of omega over the rows, per position and cluster, feeds H_c = sum_p count[p, c] G_p
    flat_gw_omega = (gw * omega[None, :, None]).reshape(P * N, d)
    for it in range(max(1, n_iter)):
        # E-step: dist(i, c) = c^T G c - 2 c^T G w_i (+ w_i^T G w_i), chunked over sub-vectors.
        new_codes = torch.empty_like(codes)
        for p in range(P):
            cgc = (codebook * codebook).sum(1) if metric is None else ((codebook @ metric[p]) * codebook).sum(1)
            for s in range(0, N, CHUNK):
                dist = torch.addmm(cgc[None, :], gw[p, s : s + CHUNK], codebook.T, alpha=-2.0)
                best, idx = dist.min(dim=1)
                new_codes[p, s : s + CHUNK] = idx
                err[p, s : s + CHUNK] = (best + wgw[p, s : s + CHUNK]).clamp_min(0.0)
        objective = float((err * omega).sum())
        history.append(objective)
        if on_iter is not None:
            on_iter(it, objective)
        changed = it == 0 or bool((new_codes != codes).any())
        codes = new_codes
        if not changed:
            converged = True
            break
        if n_iter == 0 or it == n_iter - 1:
            break
        # M-step: H_c c = b_c with H_c = sum omega_i G_{p_i}, b_c = sum omega_i G_{p_i} w_i.
        flat_codes = codes.reshape(-1)
        rhs = torch.zeros(k, d, dtype=torch.float64, device=device).index_add_(0, flat_codes, flat_gw_omega)
        mass = torch.zeros(P * k, dtype=torch.float64, device=device)
        pos = torch.arange(P, device=device).repeat_interleave(N) * k + flat_codes
        mass.index_add_(0, pos, omega.repeat(P))
        mass = mass.reshape(P, k)
        used = mass.sum(0) > 0
        if metric is None:
            h_diag = mass.sum(0)
            solved = rhs[used] / h_diag[used, None]
        else:
            H = (mass.T @ metric.reshape(P, d * d)).reshape(k, d, d)
            solved = torch.linalg.solve(H[used], rhs[used])
        codebook = codebook.clone()
        codebook[used] = solved
        empty = torch.nonzero(~used).flatten()
        if empty.numel():
            # Re-seed empty clusters with the sub-vectors the current codebook serves worst.
            worst = torch.argsort((err * omega).reshape(-1), descending=True)[: empty.numel()]
            codebook[empty] = blocks.reshape(-1, d)[worst]
    return EMResult(codebook=codebook, codes=codes, history=history, converged=converged, total=total)


def pq_objective(blocks: Tensor, grams: Tensor | None, codebook: Tensor, codes: Tensor, *,
                 weights: Tensor | None = None, damping: float = 0.01) -> float:
    """``J`` of a codebook and codes, computed directly (for checks and comparisons).

    Example:
        >>> b = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
        >>> pq_objective(b, None, torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.long))
        1.0
    """
    blocks = blocks.to(torch.float64)
    diff = blocks - codebook.to(torch.float64)[codes]
    if grams is None:
        per = (diff * diff).sum(-1)
    else:
        metric = _damped(grams.to(torch.float64), damping)
        per = (torch.bmm(diff, metric) * diff).sum(-1)
    omega = torch.ones(blocks.shape[1], dtype=torch.float64) if weights is None else weights.to(torch.float64)
    return float((per * omega).sum())


__all__ = ["EMResult", "blocks_to_flat", "pq_em", "pq_objective", "weight_blocks"]
