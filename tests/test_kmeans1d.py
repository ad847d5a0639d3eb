"""kmeans1d: quality against scikit-learn's k-means++, speed on a 4096x4096 layer, edge cases."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from deepshrink.quantize import INITS, kmeans1d


def _wcss(x: np.ndarray, c: np.ndarray, labels: np.ndarray) -> float:
    return float(np.sum((x.astype(np.float64) - c.astype(np.float64)[labels]) ** 2))


@pytest.mark.parametrize("dist", ["gaussian", "laplace"])
def test_quality_vs_sklearn_kmeanspp(dist: str) -> None:
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    # trained weights are closer to Laplace than to Gaussian: heavier tails, sparse outliers
    x = (rng.standard_normal(200_000) if dist == "gaussian" else rng.laplace(size=200_000)).astype(np.float32) * 0.05
    km = KMeans(32, n_init=3, random_state=0).fit(x.reshape(-1, 1).astype(np.float64))
    ref = _wcss(x, km.cluster_centers_.ravel(), km.labels_)
    c, labels = kmeans1d(x, 32)
    assert _wcss(x, c, labels) <= 1.001 * ref


def test_labels_are_nearest_and_centroids_are_means() -> None:
    x = np.random.default_rng(1).laplace(size=50_000).astype(np.float32)
    c, labels = kmeans1d(x, 16)
    assert c.dtype == np.float32 and labels.dtype == np.int32 and np.all(np.diff(c) > 0)
    nearest = np.abs(x[:, None] - c[None, :].astype(np.float64)).argmin(1)
    assert np.mean(nearest == labels) > 0.9999
    for j in range(16):
        assert abs(x[labels == j].astype(np.float64).mean() - c[j]) < 1e-6


@pytest.mark.parametrize("init", INITS)
def test_every_init_runs_both_solvers(init: str) -> None:
    x = np.random.default_rng(2).standard_normal(5_000)
    for solver in ("newton", "lloyd"):
        c, labels = kmeans1d(x, 8, init=init, solver=solver)
        assert len(c) == 8 and labels.min() == 0 and labels.max() == 7
        assert c.dtype == np.float64


def test_few_distinct_values_and_torch_input() -> None:
    c, labels = kmeans1d(torch.tensor([1.0, 1.0, 2.0, 3.0]), 8)
    assert c.tolist() == [1.0, 2.0, 3.0] and labels.tolist() == [0, 0, 1, 2]
    big = np.repeat(np.array([-0.5, 0.25, 1.0], dtype=np.float32), 700_000)  # histogram path, 3 levels
    c, labels = kmeans1d(big, 16)
    assert c.tolist() == [-0.5, 0.25, 1.0] and _wcss(big, c, labels) == 0.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="k="):
        kmeans1d(np.ones(3), 0)
    with pytest.raises(ValueError, match="init="):
        kmeans1d(np.ones(3), 2, init="kmeans++")
    with pytest.raises(ValueError, match="NaN"):
        kmeans1d(np.array([1.0, np.nan]), 2)
    with pytest.raises(ValueError, match="empty"):
        kmeans1d(np.array([]), 2)


def test_speed_16m_weights_k256() -> None:
    x = (np.random.default_rng(3).standard_normal(4096 * 4096) * 0.02).astype(np.float32)
    kmeans1d(x[:2_000_000], 256)  # warm caches
    start = time.perf_counter()
    c, labels = kmeans1d(x, 256)
    elapsed = time.perf_counter() - start
    assert len(c) == 256 and labels.shape == (4096 * 4096,)
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    # the labels agree with the exact nearest centroid on a sample
    idx = np.random.default_rng(4).integers(0, x.size, 100_000)
    nearest = np.abs(x[idx, None] - c[None, :]).argmin(1)
    assert np.mean(nearest == labels[idx]) > 0.999  # all but weights a hair from a midpoint
