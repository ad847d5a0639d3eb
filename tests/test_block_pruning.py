"""Depth pruning (deepshrink.BlockPruning): whole residual blocks removed, chosen by measured loss, rebuilt from the log."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError, FormatError, UnsupportedModelError
from deepshrink.prune.blocks import find_blocks, remove_blocks
from deepshrink.recipe import load_recipe
from deepshrink.surgery import replay_surgery, surgery_log


class Residual(nn.Module):
    """x + f(x); with ``zero=True`` f is exactly 0, so the block is the identity."""

    def __init__(self, width: int = 8, zero: bool = False, scale: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        with torch.no_grad():
            if zero:
                self.fc.weight.zero_()
                self.fc.bias.zero_()
            else:
                self.fc.weight.mul_(scale)
                self.fc.bias.mul_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


def _net(blocks: list[Residual]) -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.Sequential(*blocks), nn.Linear(8, 3))


def test_finds_only_repeated_shape_keeping_composite_blocks():
    model = ds.models.create("resnet_small", blocks=3)
    names = [b.name for b in find_blocks(model, ds.models.example_inputs(model))]
    # the first block of layer2 and layer3 downsamples (shape changes); the stem's layers are not composite
    assert names == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]
    assert find_blocks(ds.models.create("lenet5"), ds.models.example_inputs(ds.models.create("lenet5"))) == []


@pytest.mark.parametrize("importance", ["loss", "influence"])
def test_the_block_that_does_nothing_goes_first_and_the_output_is_unchanged(importance):
    torch.manual_seed(0)
    blocks = [Residual(), Residual(), Residual(zero=True), Residual()]
    model = _net(blocks)
    x = torch.randn(32, 4)
    before = model(x)
    report = ds.prune_(model, ds.BlockPruning(count=1, importance=importance, measure_latency=False), example_inputs=(x,))
    assert report.changed == ["1.2"]
    assert len(model[1]) == 3 and all(b is not blocks[2] for b in model[1])
    assert torch.equal(model(x), before)  # the identity block contributed exactly nothing
    assert surgery_log(model) == [{"op": "remove_blocks", "container": "1", "removed": [2]}]


def test_loss_choice_is_greedy_and_matches_a_manual_removal():
    torch.manual_seed(0)
    # blocks 1 and 3 change the signal least; the loss criterion must find both
    model = _net([Residual(scale=2.0), Residual(scale=0.01), Residual(scale=2.0), Residual(scale=0.02)])
    manual = copy.deepcopy(model)
    x = torch.randn(64, 4)
    report = ds.prune_(model, ds.BlockPruning(count=2, measure_latency=False), example_inputs=(x,))
    assert sorted(report.changed) == ["1.1", "1.3"]
    assert report.figures["blocks_before"] == 4 and report.figures["blocks_after"] == 2 and report.figures["blocks_removed"] == 2
    manual[1] = nn.Sequential(manual[1][0], manual[1][2])
    assert torch.equal(model(x), manual(x))
    assert report.figures["params_after"] == report.figures["params_before"] - 2 * (8 * 8 + 8)


def test_ratio_rounds_to_the_nearest_count_and_every_stack_keeps_a_block():
    model = ds.models.create("resnet_small", blocks=3)
    inputs = ds.models.example_inputs(model)
    report = ds.prune_(model, ds.BlockPruning(ratio=0.5, measure_latency=False), example_inputs=inputs)
    assert report.figures["blocks_removed"] == 4  # 7 candidates x 0.5 = 3.5 -> 4
    assert min(len(model.layer1), len(model.layer2), len(model.layer3)) >= 1
    assert model(inputs[0]).shape == (1, 10)


def test_ignored_blocks_stay():
    torch.manual_seed(0)
    model = _net([Residual(), Residual(zero=True), Residual()])
    x = torch.randn(8, 4)
    report = ds.prune_(model, ds.BlockPruning(count=1, ignored=("1.1",), measure_latency=False), example_inputs=(x,))
    assert report.changed != ["1.1"] and len(model[1]) == 2
    assert any(torch.equal(b.fc.weight, torch.zeros(8, 8)) for b in model[1])


def test_pruned_model_saves_and_rebuilds_from_its_factory(tmp_path):
    model = ds.models.create("resnet_small", blocks=3)
    inputs = ds.models.example_inputs(model)
    ds.prune_(model, ds.BlockPruning(count=3, measure_latency=False), example_inputs=inputs)
    ds.prune_(model, ds.ChannelPruning(ratio=0.25, measure_latency=False), example_inputs=inputs)
    path = tmp_path / "blocks.dsz"
    ds.save(model, path)
    loaded = ds.load(path)
    model.eval()
    loaded.eval()
    assert [len(loaded.layer1), len(loaded.layer2), len(loaded.layer3)] == [len(model.layer1), len(model.layer2), len(model.layer3)]
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_minilm_loses_whole_layers_and_rebuilds_exactly(tmp_path):
    model = ds.models.create("minilm")
    pydoc = ds.data.load("text:pydoc")
    report = ds.prune_(model, ds.BlockPruning(count=2, samples=32, measure_latency=False), data=pydoc)
    assert len(report.changed) == 2 and all(n.startswith("encoder.encoder.layer.") for n in report.changed)
    assert len(model.encoder.encoder.layer) == 4 and model.encoder.config.num_hidden_layers == 4
    assert report.figures["loss_after"] > report.figures["loss_before"] == 0.0
    path = tmp_path / "minilm.dsz"
    ds.save(model, path)
    loaded = ds.load(path).eval()
    tokens = model.tokenize(["Removing layers keeps the rest exactly.", "A second, longer sentence about nothing much."])
    assert torch.equal(loaded(tokens["input_ids"], tokens["attention_mask"]), model.eval()(tokens["input_ids"], tokens["attention_mask"]))
    assert loaded.encoder.config.num_hidden_layers == 4


def test_layer_indices_follow_the_blocks_that_stay():
    class Attn(nn.Module):
        def __init__(self, i: int) -> None:
            super().__init__()
            self.layer_idx = i
            self.fc = nn.Linear(8, 8)

    class Layer(nn.Module):
        def __init__(self, i: int) -> None:
            super().__init__()
            self.attn = Attn(i)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.attn.fc(x)

    stack = nn.ModuleList([Layer(i) for i in range(4)])
    holder = nn.Module()
    holder.layers = stack
    remove_blocks(holder, "layers", [0, 2])
    assert [layer.attn.layer_idx for layer in holder.layers] == [0, 1]


def test_too_many_blocks_is_refused_and_the_model_is_untouched():
    model = _net([Residual(), Residual()])
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedModelError, match="has 1 removable"):
        ds.prune_(model, ds.BlockPruning(count=2), example_inputs=(torch.randn(2, 4),))
    with pytest.raises(UnsupportedModelError, match="0 removable"):
        ds.prune_(ds.models.create("lenet5"), ds.BlockPruning(count=1), example_inputs=ds.models.example_inputs(ds.models.create("lenet5")))
    assert len(model[1]) == 2 and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match=r"BlockPruning.ratio=1.0"):
        ds.BlockPruning(ratio=1.0)
    with pytest.raises(ConfigError, match="importance"):
        ds.BlockPruning(importance="magic")


def test_a_forward_that_counts_its_blocks_is_refused_and_rolled_back():
    class Counted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([Residual() for _ in range(3)])
            self.gates = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if len(self.blocks) != self.gates.numel():
                raise RuntimeError("one gate per block")
            for gate, block in zip(self.gates, self.blocks):
                x = gate * block(x)
            return x

    model = Counted()
    blocks = list(model.blocks)
    with pytest.raises(UnsupportedModelError, match="relies on the number of blocks.*unchanged"):
        ds.prune_(model, ds.BlockPruning(count=1), example_inputs=(torch.randn(2, 8),))
    assert list(model.blocks) == blocks and surgery_log(model) == []


def test_replay_refuses_malformed_entries():
    with pytest.raises(FormatError, match="remove_blocks"):
        replay_surgery(_net([Residual(), Residual()]), [{"op": "remove_blocks", "container": "1", "removed": [0, 1]}])
    with pytest.raises(FormatError, match="remove_blocks"):
        replay_surgery(_net([Residual(), Residual()]), [{"op": "remove_blocks", "container": "1", "removed": "0"}])
    for bad in ({"container": "0", "removed": [0]}, {"container": "1", "removed": [0, 0]}, {"container": 1, "removed": [0]},
                {"container": "1", "removed": [True]}, {"container": "1", "removed": [5]}, {"container": "1", "removed": [-1]},
                {"container": "1", "removed": [0], "extra": 1}, {"container": "nope", "removed": [0]}):
        with pytest.raises(FormatError, match="remove_blocks"):
            replay_surgery(_net([Residual(), Residual(), Residual()]), [{"op": "remove_blocks", **bad}])


def test_minilm_prune_recipe_removes_layers_then_heads_and_neurons():
    stages = load_recipe("minilm-prune").stages
    assert stages[0].config == ds.BlockPruning(count=3, importance="loss", bridge=True, bridge_batches=64)
    assert isinstance(stages[1].config, ds.ChannelPruning) and stages[1].config.head_ratio == 0.08
    assert stages[0].finetune is None and stages[1].finetune is not None and stages[1].finetune.dropout == 0.0


def _shift(v: torch.Tensor) -> Residual:
    block = Residual(zero=True)
    with torch.no_grad():
        block.fc.bias.copy_(v)
    return block


def test_exhaustive_search_finds_the_pair_that_greedy_misses():
    torch.manual_seed(0)
    v, w = torch.randn(8), torch.randn(8)
    # blocks 0 and 1 cancel each other (+v then -v); block 2 is the cheapest single removal (a small shift)
    blocks = [_shift(v), _shift(-v), _shift(0.1 * w)]
    x = torch.randn(16, 4)
    reference = _net(blocks)
    greedy, exhaustive = copy.deepcopy(reference), copy.deepcopy(reference)
    report = ds.prune_(greedy, ds.BlockPruning(count=2, search="greedy", measure_latency=False), example_inputs=(x,))
    assert "1.2" in report.changed and report.figures["search"] == "greedy"
    report = ds.prune_(exhaustive, ds.BlockPruning(count=2, measure_latency=False), example_inputs=(x,))
    assert sorted(report.changed) == ["1.0", "1.1"] and report.figures["search"] == "exhaustive (3 sets)"
    assert report.figures["loss_after"] < 1e-10
    # what is left is the small shift alone, not the pair
    assert torch.allclose(exhaustive[1][0].fc.bias, 0.1 * w)
    assert torch.allclose(exhaustive(x), reference[2](reference[1][2](reference[0](x))), atol=1e-6)
    assert surgery_log(exhaustive) == [{"op": "remove_blocks", "container": "1", "removed": [0, 1]}]


@pytest.mark.parametrize("spec, expected", [
    ("torchvision:resnet18", "layer"),                 # BasicBlocks that keep their shape
    ("torchvision:mobilenet_v2", "features."),         # inverted residuals, not the conv chains inside them
    ("torchvision:regnet_x_400mf", "trunk_output."),   # named blocks ("block1-1") keep their names
])
def test_torchvision_blocks_are_whole_blocks_and_rebuild_exactly(tmp_path, spec, expected):
    model = ds.models.create(spec, num_classes=10).eval()
    inputs = ds.models.example_inputs(model)
    found = find_blocks(model, inputs)
    assert found and all(not isinstance(model.get_submodule(b.name), nn.Sequential) for b in found)
    assert all(".conv." not in b.name and ".block." not in b.name for b in found)
    report = ds.prune_(model, ds.BlockPruning(count=2, measure_latency=False), example_inputs=inputs)
    assert len(report.changed) == 2 and all(n.startswith(expected) for n in report.changed)
    ds.save(model, tmp_path / "m.dsz")
    loaded = ds.load(tmp_path / "m.dsz").eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(loaded(x), model(x))


def test_hugging_face_decoders_lose_layers_and_keep_their_layer_indices():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                   num_key_value_heads=2, intermediate_size=32)
    model = transformers.LlamaModel(cfg).eval()
    ids = torch.randint(0, 64, (2, 5))
    report = ds.prune_(model, ds.BlockPruning(count=2, measure_latency=False), example_inputs=(ids,))
    assert len(model.layers) == 2 and model.config.num_hidden_layers == 2 and len(report.changed) == 2
    assert [layer.self_attn.layer_idx for layer in model.layers] == [0, 1]
    assert model(ids, use_cache=True).last_hidden_state.shape == (2, 5, 16)  # the key/value cache indexes by layer_idx
