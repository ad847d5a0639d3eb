"""Linear bridges (BlockPruning(bridge=True)): removed runs replaced by a least-squares linear map, saved and rebuilt."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError, FormatError
from deepshrink.prune.bridges import BridgeStats, LinearBridge, fit_bridges, runs_of
from deepshrink.surgery import replay_surgery, surgery_log


class LinearResidual(nn.Module):
    """x + W x: a run of these is exactly linear, so a bridge must reproduce it."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


class TanhResidual(LinearResidual):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.fc(x))


def _net(blocks: list[nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.Sequential(*blocks), nn.Linear(8, 3))


def test_a_linear_run_is_replaced_exactly_and_logged():
    torch.manual_seed(0)
    model = _net([LinearResidual() for _ in range(4)])
    x = torch.randn(256, 4)
    before = model(x).detach()
    report = ds.prune_(model, ds.BlockPruning(count=2, bridge=True, search="greedy", measure_latency=False), example_inputs=(x,))
    assert len(report.changed) == 2
    stack = model[1]
    assert len(stack) == 3 and sum(isinstance(m, LinearBridge) for m in stack) == 1
    assert torch.allclose(model(x), before, atol=1e-4, rtol=1e-4)  # two linear blocks are one linear map
    log = surgery_log(model)
    assert log[0]["op"] == "remove_blocks" and log[1]["op"] == "insert_bridge" and log[1]["features"] == 8
    assert all(err < 1e-5 for err in report.figures["bridges"].values())


def test_runs_group_consecutive_positions_and_each_run_gets_its_own_bridge():
    assert runs_of({"a": [3, 1, 2, 5], "b": [0]}) == [("a", 1, 3), ("a", 5, 5), ("b", 0, 0)]
    torch.manual_seed(0)
    model = _net([LinearResidual() for _ in range(6)])
    x = torch.randn(256, 4)
    before = model(x).detach()
    ds.prune_(model, ds.BlockPruning(count=1, bridge=True, ignored=("1.0", "1.2", "1.3", "1.5"), measure_latency=False),
              example_inputs=(x,))
    ds.prune_(model, ds.BlockPruning(count=1, bridge=True, ignored=("1.0", "1.2", "1.3", "1.4"), measure_latency=False),
              example_inputs=(x,))
    kinds = [type(m).__name__ for m in model[1]]
    assert kinds.count("LinearBridge") == 2 and len(kinds) == 6  # bridges are never taken for blocks themselves
    assert torch.allclose(model(x), before, atol=1e-4, rtol=1e-4)


def test_bridge_beats_plain_removal_on_held_out_inputs():
    torch.manual_seed(0)
    base = _net([TanhResidual() for _ in range(5)])
    train, test = torch.randn(512, 4), torch.randn(256, 4)
    errors = {}
    for bridge in (False, True):
        model = copy.deepcopy(base)
        cfg = ds.BlockPruning(count=3, bridge=bridge, ignored=("1.0", "1.4"), measure_latency=False)
        ds.prune_(model, cfg, example_inputs=(train,))
        with torch.no_grad():
            errors[bridge] = float((model(test) - base(test)).norm() / base(test).norm())
    assert errors[True] < 0.5 * errors[False]


def test_the_set_is_chosen_with_its_bridges_in_place():
    torch.manual_seed(0)
    # Blocks 0-1 are linear and large: plain removal of them costs most, bridged it costs nothing.
    blocks = [LinearResidual(), LinearResidual(), TanhResidual(), TanhResidual()]
    with torch.no_grad():
        for b in blocks[:2]:
            b.fc.weight.mul_(3.0)
        for b in blocks[2:]:
            b.fc.weight.mul_(0.3)
    x = torch.randn(256, 4)
    plain = ds.prune_(_net(copy.deepcopy(blocks)), ds.BlockPruning(count=2, measure_latency=False), example_inputs=(x,))
    bridged = ds.prune_(_net(copy.deepcopy(blocks)), ds.BlockPruning(count=2, bridge=True, measure_latency=False), example_inputs=(x,))
    assert sorted(plain.changed) == ["1.2", "1.3"]
    assert sorted(bridged.changed) == ["1.0", "1.1"]


def test_convolutional_blocks_get_a_1x1_bridge_that_saves_and_rebuilds(tmp_path):
    torch.manual_seed(0)
    model = ds.models.create("resnet_small", blocks=3)
    data = ds.data.load("mnist5k")
    report = ds.prune_(model, ds.BlockPruning(count=2, bridge=True, bridge_batches=4, samples=64, measure_latency=False), data=data)
    bridges = [m for m in model.modules() if isinstance(m, LinearBridge)]
    assert bridges and all(b.kind == "conv2d" and isinstance(b.proj, nn.Conv2d) for b in bridges)
    assert len(report.figures["bridges"]) == len(bridges)
    ds.prune_(model, ds.ChannelPruning(ratio=0.25, measure_latency=False), example_inputs=ds.models.example_inputs(model))
    path = tmp_path / "bridged.dsz"
    ds.save(model, path)
    loaded = ds.load(path).eval()
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))


def test_minilm_bridge_keeps_its_input_width_under_channel_pruning_and_rebuilds(tmp_path):
    model = ds.models.create("minilm")
    pydoc = ds.data.load("text:pydoc")
    report = ds.prune_(model, ds.BlockPruning(count=2, bridge=True, samples=32, bridge_batches=2, measure_latency=False), data=pydoc)
    layers = model.encoder.encoder.layer
    assert sum(isinstance(m, LinearBridge) for m in layers) >= 1 and model.encoder.config.num_hidden_layers == len(layers)
    cfg = ds.ChannelPruning(ratio=0.25, head_ratio=0.08, measure_latency=False, batchnorm_samples=0)
    ds.prune_(model, cfg, example_inputs=ds.models.example_inputs(model, pydoc))
    for m in layers:
        if isinstance(m, LinearBridge):
            assert tuple(m.proj.weight.shape) == (384, 384)  # the hidden width on both sides stays
        else:
            assert m.intermediate.dense.out_features == 1152 and m.output.dense.out_features == 384
    assert model.encoder.embeddings.word_embeddings.embedding_dim == 384
    path = tmp_path / "minilm.dsz"
    ds.save(model, path)
    loaded = ds.load(path).eval()
    tokens = model.tokenize(["A bridge stands in for the layers.", "Another sentence, a little longer than the first one."])
    args = (tokens["input_ids"], tokens["attention_mask"])
    assert torch.equal(loaded(*args), model.eval()(*args))
    assert report.figures["loss_after"] < 0.5


def test_stats_solve_exactly_and_every_run_gets_a_fit():
    torch.manual_seed(0)
    x = torch.randn(100, 5)
    y = x @ torch.randn(5, 5) - 2.0
    stats = BridgeStats(5)
    stats.add(x[:50], y[:50])
    stats.add(x[50:], y[50:])
    bridge = LinearBridge(5)
    assert stats.fit_into(bridge) < 1e-5 and torch.allclose(bridge(x), y, atol=1e-4)
    model = _net([LinearResidual() for _ in range(3)])
    assert set(fit_bridges(model, [("1", 0, 1), ("1", 2, 2)], [(torch.randn(64, 4),)])) == {("1", 0, 1), ("1", 2, 2)}


def test_config_and_malformed_entries_are_refused():
    with pytest.raises(ConfigError, match="bridge_batches"):
        ds.BlockPruning(bridge=True, bridge_batches=0)
    with pytest.raises(ConfigError, match="bridge"):
        ds.BlockPruning(bridge="yes")  # type: ignore[arg-type]
    good = {"op": "insert_bridge", "container": "1", "index": 1, "features": 8, "kind": "linear"}
    replay_surgery(_net([LinearResidual(), LinearResidual()]), [good])
    for bad in ({"index": 9}, {"index": -1}, {"index": True}, {"features": 0}, {"features": "8"}, {"features": 30},
                {"features": 1 << 20}, {"kind": "exec"}, {"container": "0"}, {"container": "nope"}, {"extra": 1}):
        with pytest.raises(FormatError, match="insert_bridge"):
            replay_surgery(_net([LinearResidual(), LinearResidual()]), [{**good, **bad}])
    with pytest.raises(FormatError, match="next to another bridge"):  # a file cannot stack up bridges without bound
        replay_surgery(_net([LinearResidual(), LinearResidual()]), [good, {**good, "index": 2}])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_hugging_face_decoders_run_with_a_bridge_and_their_cache(family, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if family == "llama":
        model = transformers.LlamaModel(transformers.LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                                                 num_key_value_heads=2, intermediate_size=32))
    else:
        model = transformers.GPT2Model(transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=4, n_head=2, bos_token_id=0, eos_token_id=0))
    model.eval()
    ids = torch.randint(0, 64, (2, 5))
    report = ds.prune_(model, ds.BlockPruning(count=2, bridge=True, measure_latency=False), example_inputs=(ids,))
    stack = model.layers if family == "llama" else model.h
    assert len(report.changed) == 2 and sum(isinstance(m, LinearBridge) for m in stack) >= 1
    assert model.config.num_hidden_layers == len(stack)  # a loop over config.num_hidden_layers runs every module
    with torch.no_grad():
        plain, cached = model(ids).last_hidden_state, model(ids, use_cache=True).last_hidden_state
    assert plain.shape == (2, 5, 16) and torch.allclose(plain, cached, atol=1e-6)


def test_pruning_next_to_a_bridge_merges_the_two_and_the_file_reloads(tmp_path):
    torch.manual_seed(0)
    model = _net([LinearResidual() for _ in range(5)])
    x = torch.randn(256, 4)
    before = model(x).detach()
    for keep_all_but in ("1.2", "1.3", "1.1"):  # the 2nd and 3rd removals touch the bridge the 1st one left
        ignored = tuple(f"1.{i}" for i in range(5) if f"1.{i}" != keep_all_but)
        ds.prune_(model, ds.BlockPruning(count=1, bridge=True, ignored=ignored, measure_latency=False), example_inputs=(x,))
    kinds = [type(m).__name__ for m in model[1]]
    assert kinds == ["LinearResidual", "LinearBridge", "LinearResidual"]  # one bridge for the three removed blocks
    assert torch.allclose(model(x), before, atol=1e-4, rtol=1e-4)
    path = tmp_path / "merged.dsz"
    ds.save(model, path)
    assert torch.equal(ds.load(path, model=_net([LinearResidual() for _ in range(5)]))(x), model(x))
