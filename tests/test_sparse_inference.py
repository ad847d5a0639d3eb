"""Sparse inference: sparse layers equal dense ones, to_sparse_ swaps by measurement, save/load(sparse=True)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.sparse import SparseConv2d, SparseLinear, compare_speed, to_sparse_


def _sparse_linear(n_in: int, n_out: int, density: float, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.mul_(torch.rand_like(layer.weight) < density)
    return layer


@pytest.mark.parametrize("shape,density", [((300, 100), 0.05), ((37, 19), 0.3), ((70000, 3), 0.01), ((16, 16), 0.0)])
def test_sparse_linear_matches_dense(shape, density):
    dense = _sparse_linear(*shape, density)
    sparse = SparseLinear.from_dense(dense)
    with torch.inference_mode():
        for x in (torch.randn(1, shape[0]), torch.randn(5, shape[0]), torch.randn(2, 3, shape[0])):
            assert torch.allclose(sparse(x), dense(x), atol=1e-5, rtol=1e-5)
    assert torch.equal(sparse.state_dict()["weight"], dense.weight.detach())
    assert sparse.nnz == int((dense.weight != 0).sum())


@pytest.mark.parametrize("kwargs", [{}, {"stride": 2, "padding": 1}, {"dilation": 2, "bias": False}])
def test_sparse_conv_matches_dense(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, **kwargs)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) < 0.2)
    sparse = SparseConv2d.from_dense(conv)
    x = torch.randn(3, 6, 11, 11)
    with torch.inference_mode():
        assert torch.allclose(sparse(x), conv(x), atol=1e-5)
        assert torch.allclose(sparse(x[0]), conv(x[0]), atol=1e-5)
    with pytest.raises(ValueError, match="groups"):
        SparseConv2d.from_dense(nn.Conv2d(4, 4, 3, groups=2))


def test_sparse_layers_are_inference_only():
    sparse = SparseLinear.from_dense(nn.Linear(4, 2))
    with pytest.raises(RuntimeError, match="inference"):
        sparse(torch.randn(1, 4, requires_grad=True))


def test_state_dict_round_trip_into_sparse_and_dense():
    dense = _sparse_linear(50, 20, 0.1)
    sparse = SparseLinear.from_dense(_sparse_linear(50, 20, 0.5, seed=1))
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(4, 50)
    with torch.inference_mode():
        assert torch.allclose(sparse(x), dense(x), atol=1e-6)
    again = nn.Linear(50, 20)
    again.load_state_dict(sparse.state_dict())
    assert torch.equal(again.weight, dense.weight)


def test_to_sparse_chooses_by_measurement_and_keeps_outputs(tmp_path):
    model = ds.models.create("lenet300")
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.97, exclude=("fc3",)))
    x = torch.rand(1, 1, 28, 28)
    with torch.inference_mode():
        before = model(x)
    report = to_sparse_(model, (x,), rounds=3)
    assert "fc3" in report.skipped and "density" in report.skipped["fc3"]  # dense layer: not a candidate
    assert set(report.per_layer) == {"fc1", "fc2"}
    for name, row in report.per_layer.items():
        assert row["sparse"] == (row["speedup"] >= 1.1)
        assert isinstance(model.get_submodule(name), SparseLinear) == row["sparse"]
    with torch.inference_mode():
        assert torch.allclose(model(x), before, atol=1e-5)

    # Saved with the dense keys; a plain load is dense, load(sparse=True) swaps the recorded layers in.
    path = tmp_path / "m.dsz"
    ds.save(model, path)
    plain = ds.load(path)
    assert all(isinstance(m, nn.Linear) for m in (plain.fc1, plain.fc2, plain.fc3))
    fast = ds.load(path, sparse=True)
    for name in report.changed:
        assert isinstance(fast.get_submodule(name), SparseLinear)
    with torch.inference_mode():
        assert torch.allclose(plain(x), before, atol=1e-5)
        assert torch.allclose(fast(x), before, atol=1e-5)


def test_load_sparse_measures_when_nothing_is_recorded(tmp_path):
    model = ds.models.create("lenet300")
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.99))
    path = tmp_path / "p.dsz"
    ds.save(model, path)
    loaded = ds.load(path, sparse=True)
    x = torch.rand(1, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_a_very_sparse_large_layer_is_faster_than_dense():
    # The benchmark measures 4096x4096 at 95% (>= 4x); here a smaller layer and a loose floor,
    # because the test machine is shared.
    torch.set_num_threads(torch.get_num_threads())
    dense = _sparse_linear(2048, 2048, 0.05)
    sparse = SparseLinear.from_dense(dense)
    x = torch.randn(1, 2048)
    with torch.inference_mode():
        timing = compare_speed(lambda: dense(x), lambda: sparse(x), rounds=5, min_seconds=0.003)
    assert timing["speedup"] > 1.5, timing
