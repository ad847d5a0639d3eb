"""Weight sharing: pruned zeros stay zero and are no cluster; exact centroid values; centroid gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.quantize import codebooks, fold_sharing, get_shared


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 30), nn.ReLU(), nn.Linear(30, 5))


def test_pruned_then_shared_values_are_centroids_and_zeros() -> None:
    model = _model()
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.7))
    zeros_before = {n: (m.weight == 0).clone() for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    report = ds.share_(model, ds.KMeansSharing(bits={"conv": 3, "linear": 2}))
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        w = module.weight.detach()
        assert torch.equal(w == 0, zeros_before[name])  # zeros stay zero, none added
        centroids, labels = codebooks(model)[f"{name}.weight"]
        assert centroids.dtype == torch.float32
        assert set(w[w != 0].tolist()) <= set(centroids.tolist())  # bit-exact centroid values
        assert len(centroids) == report.per_layer[f"{name}.weight"]["clusters"]
        assert len(centroids) <= (8 if name == "0" else 4)
        assert bool((labels[zeros_before[name]] == 0).all())


def test_centroid_gradient_is_sum_of_member_gradients() -> None:
    torch.manual_seed(1)
    layer = nn.Linear(6, 4, bias=False)
    ds.prune_(layer, ds.MagnitudePruning(sparsity=0.25))
    ds.share_(layer, ds.KMeansSharing(bits=2))
    shared = get_shared(layer)
    x = torch.randn(5, 6)
    target = torch.randn(5, 4)
    # the gradient w.r.t. the effective weight, computed by hand: dL/dW = (2/N) (xW^T - t)^T x
    w = layer.weight.detach()
    grad_w = 2.0 / target.numel() * (x @ w.T - target).T @ x
    nn.functional.mse_loss(layer(x), target).backward()
    labels = shared.labels
    for j in range(shared.centroids.numel()):
        expected = grad_w[labels == j + 1].sum()
        assert torch.allclose(shared.centroids.grad[j], expected, atol=1e-6)
    assert layer.parametrizations.weight.original.grad is None


def test_centroid_finetuning_keeps_assignments_and_zeros() -> None:
    model = _model()
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.5))
    ds.share_(model, ds.KMeansSharing(bits=3))
    labels = {k: v[1].clone() for k, v in codebooks(model).items()}
    start = {k: v[0].clone() for k, v in codebooks(model).items()}
    zero = model[2].weight.detach() == 0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 5, (16,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for k, (centroids, lab) in codebooks(model).items():
        assert torch.equal(lab, labels[k])
        assert not torch.equal(centroids, start[k])  # the centroids did train
    w = model[2].weight.detach()
    assert torch.equal(w == 0, zero)
    assert len(torch.unique(w[w != 0])) <= 8


def test_fold_sharing_keeps_values_and_state_dict() -> None:
    model = _model()
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.5))
    ds.share_(model, ds.KMeansSharing(bits=4, init="density", solver="newton"))
    state = model.state_dict()
    assert any(k.endswith(".labels") for k in state) and any(k.endswith(".centroids") for k in state)
    x = torch.randn(3, 1, 8, 8)
    out = model(x)
    assert fold_sharing(model) == 3
    assert type(model[2].weight) is nn.Parameter and model[2].weight.requires_grad
    assert torch.equal(model(x), out)


def test_bits_mapping_patterns_and_skips() -> None:
    model = _model()
    report = ds.share_(model, ds.KMeansSharing(bits={"4": 6, "conv": 8}))
    assert report.per_layer["4.weight"]["bits"] == 6 and report.per_layer["0.weight"]["bits"] == 8
    assert "2.weight" in report.skipped
    again = ds.share_(model, ds.KMeansSharing(bits=2))
    assert "already shared" in again.skipped["0.weight"]


@pytest.mark.parametrize(
    "kwargs, field",
    [({"bits": 0}, "bits"), ({"bits": 17}, "bits"), ({"bits": {"conv": 99}}, "bits"), ({"bits": True}, "bits"),
     ({"init": "kmeans++"}, "init"), ({"solver": "exact"}, "solver"), ({"max_iter": -1}, "max_iter")],
)
def test_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ds.KMeansSharing(**kwargs)
    assert err.value.field == field


def test_config_round_trip() -> None:
    cfg = ds.KMeansSharing(bits={"conv": 8, "linear": 5}, init="density")
    assert ds.config_from_json(ds.config_to_json(cfg)) == cfg
