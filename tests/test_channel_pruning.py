"""Structured channel pruning: zero-then-remove equivalence over a zoo, exact counts, .dsz round trip, validation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.prune.structured import replay_channel_prune
from deepshrink.surgery import surgery_log

# spec, factory kwargs, input shape (batch 2 so that batch statistics play no role in eval mode)
ZOO = [
    ("lenet5", {}, (2, 1, 28, 28)),
    ("cnn_small", {}, (2, 1, 28, 28)),
    ("vgg_small", {}, (2, 1, 28, 28)),
    ("resnet_small", {}, (2, 1, 28, 28)),
    ("torchvision:resnet18", {"num_classes": 10}, (2, 3, 64, 64)),
    ("torchvision:mobilenet_v2", {"num_classes": 10}, (2, 3, 64, 64)),  # depthwise convs
]


def _randomize_norms(model: nn.Module, seed: int = 0) -> None:
    # Non-trivial BN statistics and affine terms, so that a forgotten BN shift would show.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@torch.no_grad()
def _zero_removed(model: nn.Module, log: list[dict]) -> None:
    """Zero what the log removes: out-channel rows and biases, norm scales and shifts, depthwise filters."""
    for entry in log:
        m = model.get_submodule(entry["module"])
        axis = "out" if "out" in entry else "features" if "features" in entry else None
        if axis is None or isinstance(m, nn.Embedding):
            continue  # only input channels were cut: they already receive zeros
        size = m.weight.shape[0]
        removed = sorted(set(range(size)) - set(entry[axis]))
        m.weight[removed] = 0
        if getattr(m, "bias", None) is not None:
            m.bias[removed] = 0


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _check_equivalence(model: nn.Module, inputs: tuple, cfg: ds.ChannelPruning, max_fraction: float = 0.8) -> nn.Module:
    model.eval()
    pruned = copy.deepcopy(model)
    report = ds.prune_(pruned, cfg, example_inputs=inputs)
    log = surgery_log(pruned)
    assert log and report.changed == [e["module"] for e in log]
    _zero_removed(model, log)
    with torch.no_grad():
        want, got = model(*inputs), pruned.eval()(*inputs)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert _params(pruned) < max_fraction * _params(model)
    return pruned


@pytest.mark.parametrize("spec,kwargs,shape", ZOO, ids=[z[0] for z in ZOO])
def test_zeroed_channels_equal_removed_channels(spec, kwargs, shape):
    torch.manual_seed(0)
    model = ds.models.create(spec, **kwargs)
    _randomize_norms(model)
    x = torch.randn(*shape)
    with torch.no_grad():
        out_shape = model.eval()(x).shape
    pruned = _check_equivalence(model, (x,), ds.ChannelPruning(ratio=0.5, importance="random", seed=1))
    assert pruned(x).shape == out_shape


@pytest.mark.parametrize("importance", ["l1", "l2", "fpgm", "taylor", "bn_scale", "random"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_every_criterion_and_scope_is_exact(importance, scope):
    torch.manual_seed(0)
    model = ds.models.create("resnet_small")
    _randomize_norms(model)
    x = torch.randn(2, 1, 28, 28)
    _check_equivalence(model, (x,), ds.ChannelPruning(ratio=0.5, importance=importance, scope=scope))


def test_minilm_heads_and_ffn_neurons_are_removed_exactly(tmp_path):
    model = ds.models.create("minilm")
    inputs = ds.models.example_inputs(model, batch_size=2)
    # The 11.7M-parameter token embedding stays (hidden size is the output), so the drop is the blocks'.
    pruned = _check_equivalence(model, inputs, ds.ChannelPruning(ratio=0.5, head_ratio=0.5), max_fraction=0.9)
    ffn = pruned.get_submodule(next(n for n, _ in pruned.named_modules() if n.endswith("intermediate.dense")))
    assert ffn.out_features == 768  # 1536 FFN neurons per block, half removed
    for layer in pruned.encoder.encoder.layer:
        att = layer.attention
        assert att.self.num_attention_heads == 6 and att.self.all_head_size == 192  # 12 heads of 32, half removed
        assert att.self.query.out_features == att.self.key.out_features == att.self.value.out_features == 192
        assert att.output.dense.in_features == 192
    heads = [e for e in surgery_log(pruned) if e["op"] == "attention_heads"]
    assert len(heads) == 6 and all(e["num_heads"] == 6 for e in heads)
    # Saved and loaded from the base factory + surgery log: identical outputs.
    ds.save(pruned, tmp_path / "m.dsz")
    loaded = ds.load(tmp_path / "m.dsz")
    assert loaded.encoder.encoder.layer[0].attention.self.num_attention_heads == 6
    with torch.no_grad():
        assert torch.equal(loaded(*inputs), pruned(*inputs))


def test_head_ratio_alone_keeps_ffn_and_whole_heads():
    model = ds.models.create("minilm")
    inputs = ds.models.example_inputs(model, batch_size=2)
    pruned = _check_equivalence(model, inputs, ds.ChannelPruning(ratio=0.0, head_ratio=0.25), max_fraction=0.97)
    layer = pruned.encoder.encoder.layer[0]
    assert layer.intermediate.dense.out_features == 1536
    assert layer.attention.self.num_attention_heads == 9 and layer.attention.self.query.out_features == 9 * 32
    # the head count is rounded up, as documented: 12 x 0.34 = 4.08 -> 5 heads removed (minilm-prune's setting)
    rounded = _check_equivalence(ds.models.create("minilm"), inputs, ds.ChannelPruning(ratio=0.0, head_ratio=0.34), max_fraction=0.97)
    assert rounded.encoder.encoder.layer[0].attention.self.num_attention_heads == 7


def test_iterative_steps_reach_the_same_count():
    model = ds.models.create("vgg_small")
    x = torch.randn(1, 1, 28, 28)
    ds.prune_(model, ds.ChannelPruning(ratio=0.5, iterative_steps=3), example_inputs=(x,))
    assert model.features[0][0].out_channels == 4 and model.features[6][0].out_channels == 16
    assert model(x).shape == (1, 10)


def test_exact_channel_counts_and_round_to():
    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 20, 3), nn.ReLU(), nn.Conv2d(20, 40, 3), nn.ReLU(), nn.Conv2d(40, 5, 1))

    x = torch.randn(1, 3, 12, 12)
    m = net()
    ds.prune_(m, ds.ChannelPruning(ratio=0.5), example_inputs=x)
    assert (m[0].out_channels, m[2].in_channels, m[2].out_channels, m[4].out_channels) == (10, 10, 20, 5)
    m = net()
    ds.prune_(m, ds.ChannelPruning(ratio=0.5, round_to=8), example_inputs=x)
    assert (m[0].out_channels, m[2].out_channels, m[4].out_channels) == (8, 16, 5)
    m = net()
    ds.prune_(m, ds.ChannelPruning(ratio=0.5, ignored=("0",)), example_inputs=x)
    assert (m[0].out_channels, m[2].out_channels) == (20, 20)


@pytest.mark.parametrize(
    "spec,kwargs,shape",
    [z for z in ZOO if z[0] in ("lenet5", "vgg_small", "resnet_small", "torchvision:resnet18")],
    ids=["lenet5", "vgg_small", "resnet_small", "torchvision:resnet18"],
)
def test_pruned_model_round_trips_through_dsz(tmp_path, spec, kwargs, shape):
    torch.manual_seed(0)
    model = ds.models.create(spec, **kwargs)
    _randomize_norms(model)
    x = torch.randn(*shape)
    ds.prune_(model, ds.ChannelPruning(ratio=0.5, importance="l2"), example_inputs=(x,))
    path = tmp_path / "pruned.dsz"
    ds.save(model, path)
    loaded = ds.load(path)
    assert surgery_log(loaded) == surgery_log(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_replay_refuses_bad_entries():
    m = nn.Sequential(nn.Linear(4, 3))
    for bad in ({"out": [2, 0]}, {"out": [0, 3]}, {"out": []}, {"out": [True]}, {"nope": [0]}):
        with pytest.raises(ValueError):
            replay_channel_prune(m, {"op": "channel_prune", "module": "0", **bad})
    with pytest.raises(ds.FormatError, match="channel_prune"):
        from deepshrink.surgery import replay_surgery

        replay_surgery(nn.Sequential(nn.Linear(4, 3)), [{"op": "channel_prune", "module": "0", "out": [5]}])


def test_bad_configs_and_missing_inputs_name_the_problem():
    for field, value in (("ratio", 1.0), ("ratio", -0.1), ("ratio", "half"), ("importance", "l3"), ("scope", "net"), ("head_ratio", 1.0),
                         ("round_to", 0), ("iterative_steps", 0), ("ignored", "fc*")):
        with pytest.raises(ds.ConfigError, match=field):
            ds.ChannelPruning(**{field: value})
    assert ds.ChannelPruning().ratio == 0.5
    with pytest.raises(ds.ConfigError, match="example_inputs"):
        ds.prune_(ds.models.create("lenet5"), ds.ChannelPruning())
    cfg = ds.ChannelPruning(ratio=0.3, importance="fpgm", ignored=("fc*",), round_to=4)
    assert ds.config_from_yaml(ds.config_to_yaml(cfg)) == cfg
    model = ds.models.create("lenet5")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ds.ConfigError, match="example_inputs.*RuntimeError"):  # inputs of the wrong shape
        ds.prune_(model, ds.ChannelPruning(), example_inputs=(torch.zeros(1, 3, 28, 28),))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_outputs_that_are_not_tensors_are_left_out_of_the_trace():
    class WithCache(nn.Module):  # returns its output and a cache object, as Hugging Face decoders do
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

        def forward(self, x):
            return {"logits": self.body(x), "cache": object()}

    torch.manual_seed(0)
    model = WithCache().eval()
    report = ds.prune_(model, ds.ChannelPruning(ratio=0.5), example_inputs=(torch.randn(2, 6),))
    assert model.body[0].out_features == 8 and model.body[2].out_features == 3, report.skipped


def test_channel_l1_recipe_prunes_then_finetunes_from_data_alone():
    # No example_inputs: the recipe's data stand in (first test items), as in `deepshrink compress`.
    data = ds.data.load("digits")
    model = ds.models.create("resnet_small", image_size=8)
    report = ds.run_recipe(model, data, "channel-l1", train_overrides={"epochs": 1, "progress": False})
    assert report.stages[0]["report"]["figures"]["param_ratio"] < 0.3
    assert surgery_log(model) and model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_batchnorm_statistics_are_re_estimated_after_removal_when_data_is_given():
    data = ds.data.load("digits")
    torch.manual_seed(0)
    model = ds.models.create("resnet_small", image_size=8).eval()
    stale, fresh = copy.deepcopy(model), copy.deepcopy(model)
    inputs = (torch.zeros(1, 1, 8, 8),)
    ds.prune_(stale, ds.ChannelPruning(ratio=0.5, batchnorm_samples=0, measure_latency=False), example_inputs=inputs, data=data)
    report = ds.prune_(fresh, ds.ChannelPruning(ratio=0.5, batchnorm_samples=300, measure_latency=False), example_inputs=inputs, data=data)
    norms = [n for n, m in fresh.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert report.figures["batchnorm_refreshed"] == len(norms)
    # The same as re-estimating the statistics by hand on the same samples; weights untouched.
    ds.quantize_(stale, ds.BatchNormStats(samples=300), data=data)
    for (k, a), (_, b) in zip(stale.state_dict().items(), fresh.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    assert not fresh.training


@pytest.mark.parametrize("factory", ["swin_t", "maxvit_t"])
def test_architectures_whose_trace_exhausts_memory_are_refused_up_front(factory):
    torchvision = pytest.importorskip("torchvision")
    model = getattr(torchvision.models, factory)(num_classes=10).eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ds.UnsupportedModelError, match="MagnitudePruning"):
        ds.prune_(model, ds.ChannelPruning(ratio=0.3), example_inputs=(torch.randn(1, 3, 224, 224),))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
