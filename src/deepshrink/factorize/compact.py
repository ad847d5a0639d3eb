"""Compact filters in place of a KxK convolution: depthwise separable (MobileNet) and Fire (SqueezeNet).

Both start from the best weight-space approximation (an SVD per input channel
for depthwise separable; the leading input subspace for Fire's squeeze) and,
given calibration inputs of the layer, solve their last stage by least squares
to the original layer's output on that data. Fine-tuning follows in a recipe.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(3, 4, 3, padding=1)
    >>> f = fit_depthwise_separable(conv, 4)  # multiplier min(N, K*K) = 4: exact
    >>> x = torch.randn(1, 3, 6, 6)
    >>> torch.allclose(f(x), conv(x), atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DepthwiseSeparable, FactorizeConfig, Fire
from .layers import DepthwiseSeparableConv2d, FireConv2d, _center_crop_for, _pair
from .method import LayerData, Method, Rank, conv2d_reason
from .vbmf import unfold

MAX_ROWS = 32768  # output positions used by a least-squares fit (a random subset beyond this)


def _solve(design: Tensor, target: Tensor, bias: bool, seed: int = 0) -> tuple[Tensor, Tensor | None]:
    """Ridge-free (up to a 1e-9 relative floor) least squares ``target ~= design @ W^T (+ b)``; rows subsampled."""
    d, t = design.double(), target.double()
    if d.shape[0] > MAX_ROWS:
        idx = torch.randperm(d.shape[0], generator=torch.Generator().manual_seed(seed))[:MAX_ROWS].to(d.device)
        d, t = d[idx], t[idx]
    if bias:
        d = torch.cat([d, d.new_ones(d.shape[0], 1)], 1)
    gram = d.T @ d
    ridge = 1e-9 * float(gram.diagonal().mean().clamp(min=1e-30))
    sol = torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device), d.T @ t).T
    return (sol[:, :-1], sol[:, -1]) if bias else (sol, None)


def _rows(t: Tensor) -> Tensor:
    """(B, C, H, W) -> (B*H*W, C)."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def _numeric_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    if not isinstance(conv.padding, str):
        return _pair(conv.padding)
    if conv.padding == "valid":
        return (0, 0)
    (kh, kw), (dh, dw) = _pair(conv.kernel_size), _pair(conv.dilation)
    if (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2:
        return None  # asymmetric "same" padding: F.unfold cannot express it
    return (dh * (kh - 1) // 2, dw * (kw - 1) // 2)


# --------------------------------------------------------------------------- depthwise separable


def full_multiplier(conv: nn.Conv2d) -> int:
    """The depthwise multiplier at which the replacement is exact: ``min(N, Kh * Kw)``.

    Example:
        >>> full_multiplier(nn.Conv2d(4, 16, 3))
        9
    """
    kh, kw = conv.kernel_size
    return min(conv.out_channels, kh * kw)


@torch.no_grad()
def fit_depthwise_separable(conv: nn.Conv2d, multiplier: int, inputs: Tensor | None = None, seed: int = 0) -> DepthwiseSeparableConv2d:
    """Depthwise KxK + pointwise 1x1 replacement; pointwise refit on ``inputs`` (B, C, H, W) when given.

    Example:
        >>> fit_depthwise_separable(nn.Conv2d(4, 6, 3), 2)[0].weight.shape
        torch.Size([8, 1, 3, 3])
    """
    out = DepthwiseSeparableConv2d.like(conv, multiplier)
    w = conv.weight.detach().double()
    n, c, kh, kw = w.shape
    m = multiplier
    # Per input channel c, W[:, c] (N x K*K) ~= sum_j s_j u_j v_j^T: filter v_j, pointwise column s_j u_j.
    u, s, vh = torch.linalg.svd(w.permute(1, 0, 2, 3).reshape(c, n, kh * kw), full_matrices=False)
    r = min(m, s.shape[1])
    half = s[:, :r].sqrt()
    depth = torch.zeros(c, m, kh * kw, dtype=w.dtype, device=w.device)
    point = torch.zeros(n, c, m, dtype=w.dtype, device=w.device)
    depth[:, :r] = vh[:, :r] * half[:, :, None]
    point[:, :, :r] = (u[:, :, :r] * half[:, None, :]).permute(1, 0, 2)
    out[0].weight.copy_(depth.reshape(c * m, 1, kh, kw))
    out[1].weight.copy_(point.reshape(n, c * m, 1, 1))
    if conv.bias is not None:
        out[1].bias.copy_(conv.bias.detach())
    if inputs is not None and inputs.numel():
        x = inputs.to(w.device, conv.weight.dtype)
        z = out[0](x)
        target = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation) if conv.padding_mode == "zeros" \
            else conv(x)
        p, b = _solve(_rows(z), _rows(target), conv.bias is not None, seed)
        out[1].weight.copy_(p.reshape(n, c * m, 1, 1))
        if b is not None:
            out[1].bias.copy_(b)
    return out


class _DepthwiseMethod(Method):
    op = "depthwise_separable_conv"
    label = "depthwise_separable"

    def reason_not(self, module: nn.Module, config: FactorizeConfig) -> str | None:
        return conv2d_reason(module)

    def candidates(self, module: nn.Module) -> list[Rank]:
        return list(range(1, full_multiplier(module) + 1))

    def config_rank(self, module: nn.Module, config: FactorizeConfig) -> Rank | None:
        assert isinstance(config, DepthwiseSeparable)
        if config.ratio is not None:
            return None
        return min(config.multiplier or 1, full_multiplier(module))

    def build(self, module: nn.Module, rank: Rank) -> nn.Module:
        return DepthwiseSeparableConv2d.like(module, int(rank))

    def needs_calibration(self, config: FactorizeConfig | None) -> bool:
        return isinstance(config, DepthwiseSeparable) and config.least_squares

    def fit(self, module: nn.Module, rank: Rank, config: FactorizeConfig, data: LayerData) -> nn.Module:
        return fit_depthwise_separable(module, int(rank), data.inputs, config.seed)

    def entry(self, name: str, module: nn.Module, rank: Rank) -> dict[str, Any]:
        return {"op": self.op, "module": name, "multiplier": int(rank)}


DEPTHWISE_METHOD = _DepthwiseMethod()


# --------------------------------------------------------------------------- Fire


def fire_order(conv: nn.Conv2d, expand1x1: int) -> list[int]:
    """Output channels, those for the 1x1 expand first: the ``expand1x1`` filters with most energy at the centre tap.

    Example:
        >>> conv = nn.Conv2d(2, 3, 3)
        >>> with torch.no_grad():
        ...     _ = conv.weight.zero_(); conv.weight[2, :, 1, 1] = 1.0; conv.weight[0, :, 0, 0] = 1.0
        >>> fire_order(conv, 1)
        [2, 0, 1]
    """
    w = conv.weight.detach().double()
    kh, kw = _pair(conv.kernel_size)
    total = w.pow(2).sum((1, 2, 3)).clamp(min=1e-30)
    centre = w[:, :, kh // 2, kw // 2].pow(2).sum(1) / total
    ranked = sorted(range(w.shape[0]), key=lambda i: (-float(centre[i]), i))
    first = sorted(ranked[:expand1x1])
    rest = [i for i in range(w.shape[0]) if i not in set(first)]
    return first + rest


@torch.no_grad()
def fit_fire(conv: nn.Conv2d, squeeze: int, expand1x1: int, inputs: Tensor | None = None, seed: int = 0) -> FireConv2d:
    """Fire replacement of ``conv``: squeeze width ``squeeze``, ``expand1x1`` outputs from the 1x1 expand.

    Example:
        >>> conv = nn.Conv2d(4, 6, 3, padding=1)
        >>> f = fit_fire(conv, 4, 0)  # squeeze = C, no 1x1 expand: exact
        >>> x = torch.randn(1, 4, 5, 5)
        >>> torch.allclose(f(x), conv(x), atol=1e-5)
        True
    """
    order = fire_order(conv, expand1x1)
    out = FireConv2d.like(conv, squeeze, order, expand1x1)
    w = conv.weight.detach().double()
    kh, kw = _pair(conv.kernel_size)
    u_in = torch.linalg.svd(unfold(w, 1), full_matrices=False)[0][:, :squeeze]
    if u_in.shape[1] < squeeze:
        u_in = torch.cat([u_in, u_in.new_zeros(u_in.shape[0], squeeze - u_in.shape[1])], 1)
    idx1, idx3 = torch.tensor(order[:expand1x1], dtype=torch.long), torch.tensor(order[expand1x1:], dtype=torch.long)
    out.squeeze.weight.copy_(u_in.T[:, :, None, None])
    out.expand.weight.copy_(torch.einsum("ncyx,cr->nryx", w[idx3], u_in))
    if expand1x1:
        out.expand1x1.weight.copy_((w[idx1, :, kh // 2, kw // 2] @ u_in)[:, :, None, None])
    if conv.bias is not None:
        out.expand.bias.copy_(conv.bias.detach()[idx3])
        if expand1x1:
            out.expand1x1.bias.copy_(conv.bias.detach()[idx1])
    pad = _numeric_padding(conv)
    if inputs is None or not inputs.numel() or pad is None:
        return out
    x = inputs.to(w.device, conv.weight.dtype)
    target = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
    z = out.squeeze(x)
    has_bias = conv.bias is not None
    cols = F.unfold(z, out.expand.kernel_size, dilation=out.expand.dilation, padding=pad, stride=out.expand.stride)
    design = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    wt, b = _solve(design, _rows(target[:, idx3]), has_bias, seed)
    out.expand.weight.copy_(wt.reshape(out.expand.weight.shape))
    if b is not None:
        out.expand.bias.copy_(b)
    if expand1x1:
        h, wd = target.shape[-2:]
        z1 = _center_crop_for(z, out.expand, h, wd)[..., :: out.expand.stride[0], :: out.expand.stride[1]]
        wt1, b1 = _solve(_rows(z1), _rows(target[:, idx1]), has_bias, seed)
        out.expand1x1.weight.copy_(wt1[:, :, None, None])
        if b1 is not None:
            out.expand1x1.bias.copy_(b1)
    return out


class _FireMethod(Method):
    op = "fire_conv"
    label = "fire"

    def __init__(self, expand1x1: float = 0.5) -> None:
        self.fraction = expand1x1

    def reason_not(self, module: nn.Module, config: FactorizeConfig) -> str | None:
        why = conv2d_reason(module)
        if why is None and module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (Fire needs zero padding)"
        return why

    def _e1(self, module: nn.Module) -> int:
        # At least one output stays on the KxK expand.
        return min(int(round(self.fraction * module.out_channels)), module.out_channels - 1)

    def candidates(self, module: nn.Module) -> list[Rank]:
        e1 = self._e1(module)
        return [(s, e1) for s in range(1, module.in_channels + 1)]

    def config_rank(self, module: nn.Module, config: FactorizeConfig) -> Rank | None:
        assert isinstance(config, Fire)
        return None if config.squeeze is None else (min(config.squeeze, module.in_channels), self._e1(module))

    def build(self, module: nn.Module, rank: Rank) -> nn.Module:
        return FireConv2d.like(module, int(rank[0]), list(range(module.out_channels)), int(rank[1]))

    def needs_calibration(self, config: FactorizeConfig | None) -> bool:
        return isinstance(config, Fire) and config.least_squares

    def fit(self, module: nn.Module, rank: Rank, config: FactorizeConfig, data: LayerData) -> nn.Module:
        return fit_fire(module, int(rank[0]), int(rank[1]), data.inputs, config.seed)

    def entry(self, name: str, module: nn.Module, rank: Rank) -> dict[str, Any]:
        order = fire_order(module, int(rank[1]))
        return {"op": self.op, "module": name, "squeeze": int(rank[0]), "expand1x1": int(rank[1]), "order": order}


def fire_method(config: Fire) -> _FireMethod:
    """The Fire method for a config (its 1x1 share of the outputs is part of every rank).

    Example:
        >>> fire_method(Fire(squeeze=4, expand1x1=0.25)).candidates(nn.Conv2d(2, 8, 3))
        [(1, 2), (2, 2)]
    """
    return _FireMethod(config.expand1x1)


__all__ = ["DEPTHWISE_METHOD", "fire_method", "fire_order", "fit_depthwise_separable", "fit_fire", "full_multiplier"]
