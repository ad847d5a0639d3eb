"""DataBundle: train/val/test splits plus what a model needs to know about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

SPLIT_SEED = 0
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2


@dataclass
class DataBundle:
    """Three splits and their metadata.

    ``task`` is ``"classification"`` (items are ``(input, label)``) or ``"text"``
    (items are sentences, for embedding models).

    Example:
        >>> import deepshrink as ds
        >>> d = ds.data.load("synthetic:classification")
        >>> len(d.train) > 0, d.num_classes
        (True, 4)
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    num_classes: int | None
    task: str = "classification"
    meta: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}  # type: ignore[arg-type]


def split_sizes(n: int) -> tuple[int, int, int]:
    """Train/val/test sizes for ``n`` items: 70% / 10% / 20%, rounded (mnist5k: 3500/500/1000).

    Example:
        >>> split_sizes(5000)
        (3500, 500, 1000)
    """
    n_test = int(round(n * TEST_FRACTION))
    n_val = int(round(n * VAL_FRACTION))
    return n - n_val - n_test, n_val, n_test


def stratified_split(labels: np.ndarray | None, n: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays for train/val/test, stratified by ``labels`` when given, fixed seed.

    Example:
        >>> tr, va, te = stratified_split(np.repeat(np.arange(10), 50), 500)
        >>> len(tr), len(va), len(te)
        (350, 50, 100)
    """
    n_train, n_val, n_test = split_sizes(n)
    idx = np.arange(n)
    strat = labels if labels is not None else None
    rest, test = train_test_split(idx, test_size=n_test, random_state=seed, stratify=strat)
    strat_rest = labels[rest] if labels is not None else None
    train, val = train_test_split(rest, test_size=n_val, random_state=seed, stratify=strat_rest)
    return np.sort(train), np.sort(val), np.sort(test)
