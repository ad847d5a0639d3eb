"""The factored layers: small stacks of ordinary Linear / Conv2d modules that replace one layer.

Each class is an ``nn.Sequential`` (state-dict keys ``0.weight``, ``1.weight``,
...) with a named type, so that a later factorization stage leaves it alone
and a reader of the model sees what it is. ``like(original, rank)`` builds
the structure from the layer it replaces, on that layer's device and dtype
(the meta device too: ``deepshrink.load`` checks shapes there first); the
fitting code in this package then fills the weights.

Convolutions are split so that zero padding commutes: every stage but the
last has no bias (it maps zeros to zeros), and a stage that works along one
axis pads only along that axis. So at full rank each layer reproduces the
original output exactly.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(8, 16, 3, padding=1)
    >>> t = TuckerConv2d.like(conv, (4, 6))
    >>> t(torch.zeros(1, 8, 10, 10)).shape
    torch.Size([1, 16, 10, 10])
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

Pair = tuple[int, int]


def _pair(v: Any) -> Pair:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _kw(module: nn.Module) -> dict[str, Any]:
    """Device and dtype of a module's weight: the replacement lives where the original lived."""
    w = module.weight
    return {"device": w.device, "dtype": w.dtype}


def _split_padding(conv: nn.Conv2d) -> tuple[Any, Any]:
    """Padding of the vertical and the horizontal stage of a split KxK convolution."""
    if isinstance(conv.padding, str):
        return conv.padding, conv.padding  # "same"/"valid" hold per axis as well
    ph, pw = _pair(conv.padding)
    return (ph, 0), (0, pw)


class FactoredLinear(nn.Sequential):
    """``Linear(in, out)`` as ``Linear(in, rank, bias=False)`` then ``Linear(rank, out)`` (truncated SVD).

    Example:
        >>> FactoredLinear.like(nn.Linear(10, 6), 3)[0].weight.shape
        torch.Size([3, 10])
    """

    @classmethod
    def like(cls, linear: nn.Linear, rank: int) -> FactoredLinear:
        kw = _kw(linear)
        return cls(
            nn.Linear(linear.in_features, rank, bias=False, **kw),
            nn.Linear(rank, linear.out_features, bias=linear.bias is not None, **kw),
        )


class FactoredEmbedding(nn.Sequential):
    """``Embedding(n, dim)`` as ``Embedding(n, rank)`` then ``Linear(rank, dim, bias=False)`` (ALBERT-style).

    Example:
        >>> FactoredEmbedding.like(nn.Embedding(100, 16, padding_idx=0), 4)(torch.tensor([[0, 5]])).shape
        torch.Size([1, 2, 16])
    """

    @classmethod
    def like(cls, emb: nn.Embedding, rank: int) -> FactoredEmbedding:
        kw = _kw(emb)
        return cls(
            nn.Embedding(emb.num_embeddings, rank, padding_idx=emb.padding_idx, **kw),
            nn.Linear(rank, emb.embedding_dim, bias=False, **kw),
        )


class TuckerConv2d(nn.Sequential):
    """Tucker-2: 1x1 conv (C -> r_in), KxK core (r_in -> r_out), 1x1 conv (r_out -> N) (Kim et al. 2016).

    ``rank`` is ``(r_in, r_out)``.

    Example:
        >>> TuckerConv2d.like(nn.Conv2d(8, 16, 3), (2, 5))[1].weight.shape
        torch.Size([5, 2, 3, 3])
    """

    @classmethod
    def like(cls, conv: nn.Conv2d, rank: Pair) -> TuckerConv2d:
        r_in, r_out = rank
        kw = _kw(conv)
        return cls(
            nn.Conv2d(conv.in_channels, r_in, 1, bias=False, **kw),
            nn.Conv2d(r_in, r_out, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, bias=False, padding_mode=conv.padding_mode, **kw),
            nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None, **kw),
        )


class CPConv2d(nn.Sequential):
    """CP: 1x1 (C -> R), depthwise Kx1, depthwise 1xK, 1x1 (R -> N) (Lebedev et al. 2015).

    Example:
        >>> [tuple(m.weight.shape) for m in CPConv2d.like(nn.Conv2d(4, 6, 3), 5)]
        [(5, 4, 1, 1), (5, 1, 3, 1), (5, 1, 1, 3), (6, 5, 1, 1)]
    """

    @classmethod
    def like(cls, conv: nn.Conv2d, rank: int) -> CPConv2d:
        kw = _kw(conv)
        (kh, kw_), (sh, sw), (dh, dw) = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
        pad_v, pad_h = _split_padding(conv)
        return cls(
            nn.Conv2d(conv.in_channels, rank, 1, bias=False, **kw),
            nn.Conv2d(rank, rank, (kh, 1), stride=(sh, 1), padding=pad_v, dilation=(dh, 1), groups=rank,
                      bias=False, padding_mode=conv.padding_mode, **kw),
            nn.Conv2d(rank, rank, (1, kw_), stride=(1, sw), padding=pad_h, dilation=(1, dw), groups=rank,
                      bias=False, padding_mode=conv.padding_mode, **kw),
            nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None, **kw),
        )


class SeparableConv2d(nn.Sequential):
    """KxK conv as Kx1 (C -> R) then 1xK (R -> N) (Jaderberg et al. 2014, scheme 2).

    Example:
        >>> [tuple(m.weight.shape) for m in SeparableConv2d.like(nn.Conv2d(4, 6, 3), 5)]
        [(5, 4, 3, 1), (6, 5, 1, 3)]
    """

    @classmethod
    def like(cls, conv: nn.Conv2d, rank: int) -> SeparableConv2d:
        kw = _kw(conv)
        (kh, kw_), (sh, sw), (dh, dw) = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
        pad_v, pad_h = _split_padding(conv)
        return cls(
            nn.Conv2d(conv.in_channels, rank, (kh, 1), stride=(sh, 1), padding=pad_v, dilation=(dh, 1),
                      bias=False, padding_mode=conv.padding_mode, **kw),
            nn.Conv2d(rank, conv.out_channels, (1, kw_), stride=(1, sw), padding=pad_h, dilation=(1, dw),
                      bias=conv.bias is not None, padding_mode=conv.padding_mode, **kw),
        )


class DepthwiseSeparableConv2d(nn.Sequential):
    """KxK conv as a depthwise KxK (C -> C * multiplier, groups C) then a pointwise 1x1 (MobileNet).

    Example:
        >>> [tuple(m.weight.shape) for m in DepthwiseSeparableConv2d.like(nn.Conv2d(4, 6, 3), 2)]
        [(8, 1, 3, 3), (6, 8, 1, 1)]
    """

    @classmethod
    def like(cls, conv: nn.Conv2d, multiplier: int) -> DepthwiseSeparableConv2d:
        kw = _kw(conv)
        c = conv.in_channels
        return cls(
            nn.Conv2d(c, c * multiplier, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, groups=c, bias=False, padding_mode=conv.padding_mode, **kw),
            nn.Conv2d(c * multiplier, conv.out_channels, 1, bias=conv.bias is not None, **kw),
        )


class FireConv2d(nn.Module):
    """A SqueezeNet Fire module in place of a KxK conv: squeeze 1x1, then 1x1 and KxK expands, concatenated.

    ``order`` lists the original output channels: the first ``expand1x1`` come
    from the 1x1 expand, the rest from the KxK expand; the output is put back
    in the original channel order, so the next layer needs no change. There is
    no activation between squeeze and expand: the module starts as a linear
    approximation of the conv it replaces, and the model's own activation follows.

    Example:
        >>> f = FireConv2d.like(nn.Conv2d(8, 6, 3, padding=1), 4, [5, 0, 1, 2, 3, 4], 2)
        >>> f(torch.zeros(1, 8, 7, 7)).shape, f.expand1x1.out_channels, f.expand.out_channels
        (torch.Size([1, 6, 7, 7]), 2, 4)
    """

    def __init__(self, squeeze: nn.Conv2d, expand1x1: nn.Conv2d, expand: nn.Conv2d, order: list[int]) -> None:
        super().__init__()
        self.squeeze = squeeze
        self.expand1x1 = expand1x1
        self.expand = expand
        self.order = list(order)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        # Not persistent: the surgery log carries the order, the state dict only weights.
        self.register_buffer("inverse", inverse.to(squeeze.weight.device), persistent=False)
        self.e1 = expand1x1.out_channels

    @classmethod
    def like(cls, conv: nn.Conv2d, squeeze: int, order: list[int], expand1x1: int) -> FireConv2d:
        kw = _kw(conv)
        stride, pad = conv.stride, conv.padding
        # The 1x1 expand sees the squeezed map at the conv's output grid: it takes the stride,
        # and the offset of a centred KxK window (valid convs start K//2 pixels in).
        e3 = conv.out_channels - expand1x1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty 1x1 expand (expand1x1=0) warns at init
            one = nn.Conv2d(squeeze, expand1x1, 1, stride=stride, bias=conv.bias is not None, **kw)
        return cls(
            nn.Conv2d(conv.in_channels, squeeze, 1, bias=False, **kw),
            one,
            nn.Conv2d(squeeze, e3, conv.kernel_size, stride=stride, padding=pad, dilation=conv.dilation,
                      bias=conv.bias is not None, padding_mode=conv.padding_mode, **kw),
            order,
        )

    def forward(self, x: Tensor) -> Tensor:
        z = self.squeeze(x)
        y3 = self.expand(z)
        if self.e1 == 0:
            return y3 if self.inverse.numel() == 0 else y3.index_select(1, self.inverse)
        # Align the 1x1 branch with the KxK grid: crop the squeezed map by the window offset.
        h, w = y3.shape[-2:]
        z1 = _center_crop_for(z, self.expand, h, w)
        y1 = self.expand1x1(z1)
        return torch.cat([y1, y3], dim=1).index_select(1, self.inverse)


def _center_crop_for(z: Tensor, conv: nn.Conv2d, h: int, w: int) -> Tensor:
    """The pixels of ``z`` under the centre taps of ``conv``'s windows (so a 1x1 sees what the KxK centre sees)."""
    (kh, kw), (sh, sw), (dh, dw) = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            ph, pw = 0, 0
        else:  # "same" (stride 1): PyTorch pads the left side by total // 2
            ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    else:
        ph, pw = _pair(conv.padding)
    oy, ox = dh * (kh // 2) - ph, dw * (kw // 2) - pw
    ly, lx = (h - 1) * sh + 1, (w - 1) * sw + 1
    top, left = max(0, -oy), max(0, -ox)
    bottom = max(0, oy + top + ly - (z.shape[-2] + top))
    right = max(0, ox + left + lx - (z.shape[-1] + left))
    if top or left or bottom or right:
        # Centre taps that fall in the (zero) padding: pad the squeezed map with zeros, as the KxK sees it.
        z = nn.functional.pad(z, (left, right, top, bottom))
    oy, ox = oy + top, ox + left
    return z[..., oy : oy + ly, ox : ox + lx]


FACTORED_TYPES: tuple[type[nn.Module], ...] = (
    FactoredLinear,
    FactoredEmbedding,
    TuckerConv2d,
    CPConv2d,
    SeparableConv2d,
    DepthwiseSeparableConv2d,
    FireConv2d,
)

__all__ = [
    "CPConv2d",
    "DepthwiseSeparableConv2d",
    "FACTORED_TYPES",
    "FactoredEmbedding",
    "FactoredLinear",
    "FireConv2d",
    "SeparableConv2d",
    "TuckerConv2d",
]
