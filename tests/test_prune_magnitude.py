"""Exact sparsity, tie-breaking, masks only shrink, zeros stay zero under real optimizers, validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.prune import fold_masks, get_mask, masks, restore_masks


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 33), nn.ReLU(), nn.Linear(33, 7), nn.Conv1d(1, 3, 5), nn.Embedding(11, 6))


def _zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


@pytest.mark.parametrize("s", [0.0, 0.1, 0.37, 0.5, 0.913, 1.0])
def test_layer_scope_exact_per_layer(s: float) -> None:
    model = _mlp()
    report = ds.prune_(model, ds.MagnitudePruning(sparsity=s, scope="layer"))
    for name in ("0", "2", "3", "4"):
        w = dict(model.named_modules())[name].weight
        assert _zeros(w) == round(s * w.numel()), name
        assert report.per_layer[f"{name}.weight"]["zeros"] == round(s * w.numel())
    # biases untouched by default
    assert _zeros(model[0].bias) == 0


def test_global_scope_exact_total_and_smallest_pruned() -> None:
    model = _mlp()
    before = torch.cat([m.weight.detach().abs().flatten() for m in (model[0], model[2], model[3], model[4])])
    report = ds.prune_(model, ds.MagnitudePruning(sparsity=0.6, scope="global"))
    ws = [m.weight for m in (model[0], model[2], model[3], model[4])]
    total = sum(w.numel() for w in ws)
    assert sum(_zeros(w) for w in ws) == round(0.6 * total) == report.figures["zeros"]
    kept = torch.cat([w.detach().abs().flatten() for w in ws])
    # every surviving weight is at least as large as every pruned one
    assert kept[kept > 0].min() >= before[kept == 0].max()


def test_ties_are_exact_and_deterministic() -> None:
    a, b = nn.Linear(10, 10), nn.Linear(10, 10)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(1.0)
    model = nn.Sequential(a, b)
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.33, scope="global"))
    assert _zeros(a.weight) + _zeros(b.weight) == 66
    # ties go to the lower position: the first layer's flat order first
    assert _zeros(a.weight) == 66 and bool((a.weight.flatten()[:66] == 0).all())
    layer = nn.Linear(7, 3)
    with torch.no_grad():
        layer.weight.fill_(-0.5)
    ds.prune_(layer, ds.MagnitudePruning(sparsity=0.5))
    assert _zeros(layer.weight) == round(0.5 * 21)


def test_per_layer_include_exclude_and_bias() -> None:
    model = _mlp()
    cfg = ds.MagnitudePruning(sparsity=0.5, per_layer={"2": 0.25}, exclude=("3",), include=("0", "2", "3"), prune_bias=True)
    report = ds.prune_(model, cfg)
    assert _zeros(model[0].weight) == round(0.5 * 660) and _zeros(model[0].bias) == round(0.5 * 33)
    assert _zeros(model[2].weight) == round(0.25 * 231)
    assert get_mask(model[3]) is None and "3" in report.skipped
    assert get_mask(model[4]) is None  # not included


def test_global_with_per_layer_keeps_override_out_of_pool() -> None:
    model = _mlp()
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.8, scope="global", per_layer={"4": 0.1}))
    assert _zeros(model[4].weight) == round(0.1 * 66)
    pool = [model[0].weight, model[2].weight, model[3].weight]
    assert sum(_zeros(w) for w in pool) == round(0.8 * sum(w.numel() for w in pool))


def test_repruning_only_grows_masks_and_never_revives() -> None:
    model = _mlp()
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.5, criterion="random", seed=1))
    first = {k: v.clone() for k, v in masks(model).items()}
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.7))  # magnitude now: different order
    for k, m in masks(model).items():
        assert not bool((m & ~first[k]).any()), k  # nothing kept that was pruned
    # asking for less sparsity keeps the zeros already there
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.2))
    assert _zeros(model[0].weight) == round(0.7 * 660)


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_pruned_weights_stay_zero_through_training(opt: str) -> None:
    model = _mlp()[:3]
    # the optimizer exists before pruning, with momentum state already built up
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    x, y = torch.randn(64, 20), torch.randint(0, 7, (64,))
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.8))
    keep = {k: v.clone() for k, v in masks(model).items()}
    before = model[0].weight.detach().clone()
    for _ in range(20):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for name, layer in (("0.weight", model[0]), ("2.weight", model[2])):
        w = layer.weight.detach()
        assert bool((w[~keep[name]] == 0).all())
        assert bool((torch.signbit(w[~keep[name]]) == 0).all())  # +0.0, never -0.0
    assert not torch.equal(model[0].weight.detach(), before)  # survivors did train


def test_fold_and_state_dict_round_trip() -> None:
    model = _mlp()
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.6))
    state = model.state_dict()
    fresh = _mlp()
    assert restore_masks(fresh, state) == 4
    fresh.load_state_dict(state)
    assert torch.equal(fresh[0].weight, model[0].weight)
    effective = model[2].weight.detach().clone()
    assert fold_masks(model) == 4
    assert type(model[2].weight) is nn.Parameter and torch.equal(model[2].weight.detach(), effective)


def test_obd_and_random_criteria_exact() -> None:
    model = _mlp()[:3]
    batches = [(torch.randn(16, 20), torch.randint(0, 7, (16,))) for _ in range(3)]
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.4, criterion="obd"), data=batches)
    assert _zeros(model[0].weight) == round(0.4 * 660)
    other = _mlp()[:3]
    ds.prune_(other, ds.MagnitudePruning(sparsity=0.4, criterion="random", seed=3))
    assert _zeros(other[2].weight) == round(0.4 * 231)
    with pytest.raises(ConfigError, match="data"):
        ds.prune_(_mlp(), ds.MagnitudePruning(criterion="obd"))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"sparsity": 1.5}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"scope": "model"}, "scope"),
        ({"criterion": "taylor"}, "criterion"),
        ({"per_layer": {"fc1": 2.0}}, "per_layer"),
        ({"layer_types": ("rnn",)}, "layer_types"),
        ({"include": "fc1"}, "include"),
    ],
)
def test_config_validation_names_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ds.MagnitudePruning(**kwargs)
    assert err.value.field == field and "MagnitudePruning" in str(err.value)


def test_config_round_trip() -> None:
    cfg = ds.MagnitudePruning(sparsity=0.9, scope="global", per_layer={"fc3": 0.5}, exclude=("conv1",))
    assert ds.config_from_yaml(ds.config_to_yaml(cfg)) == cfg
