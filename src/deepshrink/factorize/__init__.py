"""Low rank and compact filters: ``factorize_(model, CONFIG, data=...)``.

- :class:`SVD`: a Linear becomes two Linears (plain or activation-aware); Embeddings too.
- :class:`Tucker`: Tucker-2 of a convolution (1x1, KxK core, 1x1); ranks from a ratio, energy or EVBMF.
- :class:`CP`: four small convolutions from a CP decomposition (our memory-light ALS).
- :class:`Separable`: KxK as Kx1 then 1xK.
- :class:`DepthwiseSeparable` and :class:`Fire`: compact filters fitted by least squares on data.

Ranks come from the config, or from a ``ratio`` of parameters or MACs, spent
uniformly or where each layer's measured sensitivity says it hurts least.
Every replacement is recorded in the surgery log, so ``deepshrink.save`` /
``deepshrink.load`` rebuild it.

Example:
    >>> import torch
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> x = torch.randn(2, 1, 28, 28)
    >>> want = model(x)
    >>> _ = ds.factorize_(model, ds.SVD(rank=10, layers=("fc3",), latency=False))  # full rank of fc3
    >>> torch.allclose(model(x), want, atol=1e-5), type(model.fc3).__name__
    (True, 'FactoredLinear')
"""

from __future__ import annotations

from . import replay as _replay  # noqa: F401  (registers the surgery replays)
from .config import CP, SVD, DepthwiseSeparable, FactorizeConfig, Fire, Separable, Tucker
from .handler import method_for, run_factorize
from .layers import (
    CPConv2d,
    DepthwiseSeparableConv2d,
    FactoredEmbedding,
    FactoredLinear,
    FireConv2d,
    SeparableConv2d,
    TuckerConv2d,
)
from .ranks import allocate, sensitivity_curves
from .vbmf import evbmf_rank

__all__ = [
    "CP",
    "CPConv2d",
    "DepthwiseSeparable",
    "DepthwiseSeparableConv2d",
    "FactorizeConfig",
    "FactoredEmbedding",
    "FactoredLinear",
    "Fire",
    "FireConv2d",
    "SVD",
    "Separable",
    "SeparableConv2d",
    "Tucker",
    "TuckerConv2d",
    "allocate",
    "evbmf_rank",
    "method_for",
    "run_factorize",
    "sensitivity_curves",
]
