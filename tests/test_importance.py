"""Channel importance criteria: exact activation statistics, group scores, data passes, and pruning with each criterion."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import TensorDataset

import deepshrink as ds
from deepshrink.data.bundle import DataBundle
from deepshrink.errors import ConfigError
from deepshrink.prune.activation_importance import (
    APoZImportance,
    LayerScoreImportance,
    MeanActivationImportance,
    activation_chains,
    activation_statistics,
)
from deepshrink.prune.importance import IMPORTANCES, build_importance, make_importance, needs_data
from deepshrink.prune.taylor import TaylorImportance, taylor_contributions


def _bundle(x: torch.Tensor, y: torch.Tensor) -> DataBundle:
    return DataBundle("t", TensorDataset(x, y), TensorDataset(x[:8], y[:8]), TensorDataset(x[:8], y[:8]),
                      tuple(x.shape[1:]), int(y.max()) + 1)


def test_weight_criteria_are_classes_and_data_criteria_need_build():
    model = ds.models.create("lenet5")
    inputs = ds.models.example_inputs(model)
    names = {"l1": "L1Importance", "l2": "L2Importance", "fpgm": "FPGMImportance", "bn_scale": "BNScaleImportance",
             "random": "RandomImportance"}
    for name, cls in names.items():
        assert type(build_importance(ds.ChannelPruning(importance=name), model, inputs, None)).__name__ == cls
        assert type(make_importance(name)).__name__ == cls
    assert {"mean_activation", "apoz", "scop", "taylor"} <= set(IMPORTANCES)
    assert needs_data("scop") and not needs_data("l2")
    with pytest.raises(ConfigError, match="build_importance"):
        make_importance("apoz")
    with pytest.raises(ConfigError, match="importance"):
        ds.ChannelPruning(importance="l3")


def test_activation_statistics_are_exact_after_bn_and_relu():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
    bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
    bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.5]))
    bn.weight.data.copy_(torch.tensor([1.0, -0.5, 2.0]))
    model = nn.Sequential(conv, bn, nn.ReLU(), nn.Conv2d(3, 2, 1)).eval()
    batches = [(torch.randn(4, 2, 5, 5),), (torch.randn(3, 2, 5, 5),)]
    stats = activation_statistics(model, (batches[0][0][:1],), batches, [conv])
    acts = torch.cat([torch.relu(bn(conv(b[0]))) for b in batches]).detach()  # (7, 3, 5, 5)
    per_channel = acts.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(stats.mean_abs[conv], per_channel.abs().mean(1))
    torch.testing.assert_close(stats.apoz[conv], (per_channel <= 0).float().mean(1))
    assert stats.count == 2


def test_chain_follows_norm_to_functional_activation_and_stops_at_pooling():
    model = ds.models.create("resnet_small").eval()
    x = torch.zeros(1, 1, 28, 28)
    chains = activation_chains(model, (x,), [model.stem[0], model.layer1[0].conv1, model.layer1[0].conv2])
    assert chains[model.stem[0]] == (model.stem[1], torch.nn.functional.relu)
    assert chains[model.layer1[0].conv1][0] is model.layer1[0].bn1
    # bn2 feeds the residual addition: no activation of its own, so the raw BN output is scored
    assert chains[model.layer1[0].conv2] == (model.layer1[0].bn2, None)
    lenet = ds.models.create("lenet5").eval()
    chains = activation_chains(lenet, (x,), [lenet.conv1, lenet.fc1])
    assert chains[lenet.conv1] == (lenet.conv1, None)  # Caffe LeNet-5: max-pool, no ReLU after the convs
    assert chains[lenet.fc1][1] is torch.nn.functional.relu


def _dead_unit_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight[2] *= 10  # a large filter that never fires: magnitude keeps it, activations do not
        model[0].bias[2] = -100.0
    return model.eval()


@pytest.mark.parametrize("criterion", ["apoz", "mean_activation"])
def test_dead_channel_is_pruned_first(criterion):
    model = _dead_unit_model()
    x = torch.randn(64, 4)
    data = _bundle(x, torch.randint(0, 3, (64,)))
    imp = build_importance(ds.ChannelPruning(importance=criterion, batches=2), model, (x[:1],), data)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
    group = dg.get_pruning_group(model[0], tp.prune_linear_out_channels, idxs=list(range(6)))
    scores = imp(group)
    assert scores.shape == (6,) and int(scores.argmin()) == 2 and float(scores[2]) == 0.0
    l1 = build_importance(ds.ChannelPruning(importance="l1"), model, (x[:1],), data)(group)
    assert int(l1.argmax()) == 2  # the weight criterion would keep it


def test_group_score_is_mean_over_coupled_producers_and_stale_scores_refuse():
    a, b = nn.Linear(3, 4), nn.Linear(3, 4)

    class Sum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.head = a, b, nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.a(x) + self.b(x))

    model = Sum()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3))
    group = dg.get_pruning_group(a, tp.prune_linear_out_channels, idxs=[0, 1, 2, 3])
    imp = LayerScoreImportance({a: torch.tensor([1.0, 2.0, 3.0, 4.0]), b: torch.tensor([3.0, 2.0, 1.0, 0.0])})
    assert imp(group).tolist() == [2.0, 2.0, 2.0, 2.0]
    stale = LayerScoreImportance({a: torch.ones(5)})
    with pytest.raises(RuntimeError, match="build_importance"):
        stale(group)


def test_taylor_changes_are_exact_per_sample_and_survive_inplace_relu():
    # sum over positions of a * dL_n/da for each sample n, where a is the batch norm's output (the gate),
    # even though an in-place ReLU overwrites that output afterwards.
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3)
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 2.0)
    model = nn.Sequential(conv, bn, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    x, y = torch.randn(6, 1, 5, 5), torch.randint(0, 4, (6,))
    got = taylor_contributions(model, (x[:1],), [((x[:4],), y[:4]), ((x[4:],), y[4:])], [conv])[conv]
    want = []
    for n in range(6):
        a = bn(conv(x[n : n + 1])).detach().requires_grad_(True)
        out = model[5](model[4](model[3](torch.relu(a))))
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(out, y[n : n + 1]), a)
        want.append((a * g).sum((2, 3)).detach())
    torch.testing.assert_close(got, torch.cat(want))
    assert conv.weight.grad is None and conv.weight.requires_grad  # parameters untouched


def test_taylor_scores_square_each_sample_before_averaging_and_add_coupled_producers():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)

    class Sum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.head = a, b, nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.a(x) + self.b(x))

    model = Sum()
    # Channel 0 helps some samples and hurts others: its mean change is 0, its importance is not.
    imp = TaylorImportance({a: torch.tensor([[2.0, 1.0], [-2.0, 1.0]]), b: torch.tensor([[1.0, 0.0], [1.0, 0.0]])})
    assert imp.scores[a].tolist() == [4.0, 1.0]
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3))
    group = dg.get_pruning_group(a, tp.prune_linear_out_channels, idxs=[0, 1])
    # per sample: channel 0 -> 3, -1 (mean square 5); channel 1 -> 1, 1 (1); divided by the mean (3)
    torch.testing.assert_close(imp(group), torch.tensor([5.0, 1.0]) / 3.0)
    with pytest.raises(RuntimeError, match="build_importance"):
        TaylorImportance({a: torch.ones(2, 5)})(group)


def test_taylor_through_build_importance_uses_labelled_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    imp = build_importance(ds.ChannelPruning(importance="taylor", batches=2, batch_size=16), model, (x[:1],), _bundle(x, y))
    assert isinstance(imp, TaylorImportance) and imp.contributions[model[0]].shape == (32, 5)
    assert model[0].weight.grad is None
    with pytest.raises(ConfigError, match="build_importance"):
        make_importance("taylor")


@pytest.mark.parametrize("criterion", ["mean_activation", "apoz", "taylor"])
def test_pruning_with_data_criteria_removes_exact_counts(criterion):
    # Through Torch-Pruning's pruner, as structured.py uses the importance object.
    data = ds.data.load("synthetic:classification:64")
    model = ds.models.create("resnet_small", image_size=8, num_classes=4).eval()
    inputs = ds.models.example_inputs(model, data)
    imp = build_importance(ds.ChannelPruning(importance=criterion, batches=2), model, inputs, data)
    pruner = tp.pruner.MetaPruner(model, inputs, importance=imp, pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
    assert model.stem[0].out_channels == 4 and model.layer3[0].conv1.out_channels == 16
    assert model(inputs[0]).shape == (1, 4)


def test_apoz_without_data_uses_example_inputs():
    model = ds.models.create("lenet300").eval()
    x = torch.rand(16, 784)
    imp = build_importance(ds.ChannelPruning(importance="apoz"), model, (x,), None)
    assert isinstance(imp, APoZImportance) and len(imp.scores[model.fc1]) == 300
    stats = activation_statistics(model, (x[:1],), [(x,)])
    torch.testing.assert_close(imp.scores[model.fc2], 1 - stats.apoz[model.fc2])
    assert isinstance(MeanActivationImportance.measure(model, (x[:1],), [(x,)]), MeanActivationImportance)
    assert model.training is False


def test_fpgm_matches_torch_pruning_and_scores_grouped_convolution_inputs():
    """Same scores as Torch-Pruning's FPGM where it works; on grouped convolutions (where it fails) every input
    channel is scored by the filters of its own group."""
    from deepshrink.prune.importance import FPGMImportance, channel_rows

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    x = torch.randn(2, 3, 8, 8)
    graph = tp.DependencyGraph().build_dependency(plain, example_inputs=x)
    for layer in (plain[0], plain[3]):
        group = graph.get_pruning_group(layer, tp.prune_conv_out_channels, idxs=list(range(layer.out_channels)))
        torch.testing.assert_close(FPGMImportance()(group), tp.importance.FPGMImportance(p=2)(group))

    conv = nn.Conv2d(4, 6, 3, groups=2)
    rows = channel_rows(conv, as_input=True)
    # input channel 3 is the second channel of group 1, read by filters 3, 4, 5 only
    torch.testing.assert_close(rows[3], conv.weight[3:, 1].flatten())
    grouped = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.ReLU(),
                            nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    y = torch.randn(2, 3, 6, 6)
    graph = tp.DependencyGraph().build_dependency(grouped, example_inputs=y)
    group = graph.get_pruning_group(grouped[0], tp.prune_conv_out_channels, idxs=list(range(8)))
    with pytest.raises(RuntimeError):  # Torch-Pruning's FPGM on a grouped convolution's inputs
        tp.importance.FPGMImportance(p=2)(group)

    def distance_sums(rows: torch.Tensor) -> torch.Tensor:
        return torch.cdist(rows.pow(2)[None], rows.pow(2)[None]).squeeze(0).sum(0)

    want = (distance_sums(channel_rows(grouped[0], False)) + distance_sums(channel_rows(grouped[2], True))) / 2
    torch.testing.assert_close(FPGMImportance()(group), want / want.mean())
    # and the whole ResNeXt-style model prunes with it, in both scopes
    for scope in ("layer", "global"):
        model = copy.deepcopy(grouped)
        ds.prune_(model, ds.ChannelPruning(ratio=0.5, importance="fpgm", scope=scope, measure_latency=False), example_inputs=(y,))
        assert model(y).shape == (2, 3)
