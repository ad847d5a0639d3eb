"""Synthetic data for tests: ``synthetic:classification[:N]`` and ``synthetic:text[:N]``."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..errors import SpecError
from .bundle import DataBundle, stratified_split

_WORDS = (
    "model weight layer prune share code small fast network channel filter train data test value "
    "sparse dense matrix vector kernel batch epoch loss error signal noise bit byte file size"
).split()


def load_synthetic(kind: str, n: int = 400, seed: int = 0) -> DataBundle:
    """Separable 4-class 1x8x8 images, or random short sentences, generated from ``seed``.

    Example:
        >>> load_synthetic("classification", n=100).sizes()
        {'train': 70, 'val': 10, 'test': 20}
    """
    rng = np.random.default_rng(seed)
    if kind == "classification":
        classes = 4
        y = np.arange(n) % classes
        centers = rng.normal(0, 1, size=(classes, 64)).astype(np.float32)
        x = centers[y] + 0.5 * rng.normal(0, 1, size=(n, 64)).astype(np.float32)
        x_t = torch.from_numpy(x).reshape(n, 1, 8, 8)
        y_t = torch.from_numpy(y.astype(np.int64))
        tr, va, te = stratified_split(y, n, seed)
        parts = [TensorDataset(x_t[torch.from_numpy(i)], y_t[torch.from_numpy(i)]) for i in (tr, va, te)]
        return DataBundle("synthetic:classification", *parts, input_shape=(1, 8, 8), num_classes=classes)
    if kind == "text":
        from .text import SentenceDataset

        sentences = [" ".join(rng.choice(_WORDS, size=int(rng.integers(4, 12)))) for _ in range(n)]
        tr, va, te = stratified_split(None, n, seed)
        parts = [SentenceDataset([sentences[i] for i in idx]) for idx in (tr, va, te)]
        return DataBundle("synthetic:text", *parts, input_shape=(), num_classes=None, task="text")
    raise SpecError(f"unknown synthetic data kind {kind!r}; use synthetic:classification or synthetic:text")
