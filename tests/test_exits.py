"""Early exits: exactness when closed, per-input exit, save/load, training modes, calibration, MACs accounting."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import deepshrink as ds
from deepshrink.dynamic import choose_thresholds, exit_outputs, exits_disabled, predict_with_exits
from deepshrink.analysis.macs import total_macs


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


ZOO = [
    ("lenet5", {}, ["pool1", "pool2"], (1, 28, 28)),
    ("resnet_small", {}, ["layer1", "layer2"], (1, 28, 28)),
    ("torchvision:resnet18", {"num_classes": 10}, ["layer1", "layer2", "layer3"], (3, 32, 32)),
]


@pytest.mark.parametrize("spec,kwargs,after,shape", ZOO, ids=[z[0] for z in ZOO])
def test_closed_exits_give_the_full_model_exactly_and_open_ones_exit_per_input(spec, kwargs, after, shape):
    torch.manual_seed(0)
    model = ds.models.create(spec, **kwargs).eval()
    x = torch.rand(6, *shape)
    with torch.no_grad():
        before = model(x)
        ds.add_exits_(model, ds.EarlyExits(after=after, hidden=16), example_inputs=(x,))
        assert torch.equal(model(x), before)
        model.early_exits.thresholds.fill_(1.0 + 1e-3)  # above 1: can never fire
        assert torch.equal(model(x), before)
        outs = exit_outputs(model, x)
        assert torch.equal(outs[-1], before)
        # Force a pattern: thresholds between the inputs' confidences at the first exit.
        conf = ds.dynamic.confidence(outs[0], "max_prob")
        model.early_exits.thresholds[0] = conf.median()
        logits, taken = predict_with_exits(model, x)
        left = conf >= conf.median()
        assert torch.equal(taken == 0, left)
        assert torch.allclose(logits[left], outs[0][left], atol=1e-5)
        stay = taken == len(after)
        assert torch.allclose(logits[stay], before[stay], atol=1e-5)
        assert torch.equal(model(x), logits)
        for i in range(len(x)):  # one input at a time (the fast path) agrees with the batch
            if abs(float(conf[i] - conf.median())) < 1e-4:
                continue  # on the threshold itself: batched and single convolutions may round either way
            one, where = predict_with_exits(model, x[i : i + 1])
            assert where.tolist() == [int(taken[i])]
            assert torch.allclose(one[0], logits[i], atol=1e-5)


def test_inputs_that_leave_are_not_computed_further():
    torch.manual_seed(0)
    model = ds.models.create("lenet5").eval()
    ds.add_exits_(model, ds.EarlyExits(after=["pool1", "pool2"]))
    x = torch.rand(8, 1, 28, 28)
    full = total_macs(model, (x,))
    model.early_exits.thresholds.fill_(0.0)  # everyone leaves at the first exit
    head0 = sum(p.numel() for p in model.early_exits.heads[0].parameters()) - 10  # linear weights: one MAC each
    conv1 = 20 * 25 * 24 * 24
    assert total_macs(model, (x,)) == 8 * (conv1 + head0)
    assert total_macs(model, (x,)) < 0.2 * full
    model.early_exits.thresholds.copy_(torch.tensor([2.0, 0.0]))  # first exit closed: all leave at the second
    assert predict_with_exits(model, x)[1].tolist() == [1] * 8


@pytest.mark.parametrize("spec", ["lenet5", "resnet_small"])
def test_save_and_load_rebuild_the_exits_and_thresholds(spec, tmp_path):
    torch.manual_seed(0)
    model = ds.models.create(spec)
    after = ["pool1", "pool2"] if spec == "lenet5" else ["layer1", "layer2"]
    ds.add_exits_(model, ds.EarlyExits(after=after, channels=4, pool=2, hidden=8, confidence="entropy"))
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        conf = [ds.dynamic.confidence(o, "entropy") for o in exit_outputs(model.eval(), x)]
    model.early_exits.thresholds.copy_(torch.stack([c.quantile(0.6) for c in conf[:-1]]))
    ds.save(model, tmp_path / "m.dsz")
    again = ds.load(tmp_path / "m.dsz")
    assert ds.inspect(tmp_path / "m.dsz")["surgery"][-1]["op"] == "early_exits"
    assert torch.equal(again.early_exits.thresholds, model.early_exits.thresholds)
    with torch.no_grad():
        a, ta = predict_with_exits(model.eval(), x)
        b, tb = predict_with_exits(again, x)
    assert torch.equal(a, b) and torch.equal(ta, tb)
    assert 0 < int((ta < len(after)).sum()) < 16  # some left early, some did not
    assert copy.deepcopy(again)(x).shape == (16, 10)  # a copy keeps working (no hooks left behind)


def test_exits_off_the_main_path_and_bad_names_are_refused():
    model = ds.models.create("resnet_small")
    with pytest.raises(ds.ConfigError, match="main path"):
        ds.add_exits_(model, ds.EarlyExits(after=["layer1.0.conv1"]))
    assert not hasattr(model, "early_exits") and type(model).__name__ == "SmallResNet"
    with pytest.raises(ds.ConfigError, match="no \\['nope'\\]"):
        ds.add_exits_(model, ds.EarlyExits(after=["nope"]))
    with pytest.raises(ds.ConfigError, match="order"):
        ds.add_exits_(model, ds.EarlyExits(after=["layer2", "layer1"]))
    ds.add_exits_(model, ds.EarlyExits(after=["layer1"]))
    with pytest.raises(ds.ConfigError, match="already"):
        ds.add_exits_(model, ds.EarlyExits(after=["layer2"]))
    with pytest.raises(ds.ConfigError, match="confidence"):
        ds.EarlyExits(after=["a"], confidence="margin")


@pytest.fixture(scope="module")
def digits():
    return ds.data.load("digits")


def test_frozen_backbone_training_changes_only_the_heads(digits):
    torch.manual_seed(0)
    model = ds.models.create("resnet_small", image_size=8, width=4)
    ds.add_exits_(model, ds.EarlyExits(after=["layer1"]), data=digits)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds.train_exits(model, digits, ds.TrainConfig(epochs=1, max_steps=5, progress=False), freeze_backbone=True)
    after = model.state_dict()
    for k in before:
        if k.startswith("early_exits.heads"):
            continue
        assert torch.equal(before[k], after[k]), k  # weights and batch-norm statistics alike
    assert not torch.equal(before["early_exits.heads.0.2.weight"], after["early_exits.heads.0.2.weight"])
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_joint_training_calibration_and_report_agree(digits):
    torch.manual_seed(0)
    model = ds.models.create("lenet300", in_features=64, num_classes=10)
    ds.add_exits_(model, ds.EarlyExits(after=["fc1", "fc2"]), data=digits)
    before = model.fc1.weight.clone()
    ds.train_exits(model, digits, ds.TrainConfig(epochs=4, lr=0.05, optimizer="sgd", progress=False), weights=[0.5, 0.5, 1.0])
    assert not torch.equal(before, model.fc1.weight)  # joint: the backbone trains too
    report = ds.calibrate_exits(model, digits.val, max_drop=0.01)
    f = report.figures
    assert f["met"] and f["val_accuracy"] >= f["full_accuracy"] - 0.01 - 1e-9
    assert abs(sum(f["exit_share"].values()) - 1.0) < 1e-9
    val = ds.exit_report(model, digits.val, latency_inputs=3, repeats=1)
    # calibration's prediction of the policy equals what early-exit inference does
    assert val["accuracy"] == pytest.approx(f["val_accuracy"], abs=1e-6)
    assert val["exit_share"] == pytest.approx(f["exit_share"])
    # average MACs = sum over exits of (share leaving there) x (MACs of an input leaving there)
    expected = sum(val["exit_share"][k] * val["macs_if_leaving_at"][k] for k in val["exit_share"])
    assert val["macs_per_input"] == pytest.approx(expected, rel=1e-9)
    assert val["macs_per_input"] < val["full_macs_per_input"] and val["latency_ms_per_input"] > 0
    with pytest.raises(ds.ConfigError, match="exactly one"):
        ds.calibrate_exits(model, digits.val)
    impossible = ds.calibrate_exits(model, digits.val, target_accuracy=1.0)
    assert impossible.figures["met"] is (impossible.figures["full_accuracy"] >= 1.0)
    with exits_disabled(model):
        assert all(math.isinf(t) for t in model.early_exits.thresholds.tolist())


def test_choose_thresholds_by_hand():
    # exit 0: inputs 0-3 with confidences; correct at the exit: T F T T; final correct everywhere
    conf = [torch.tensor([0.99, 0.95, 0.9, 0.5]), torch.ones(4)]
    ok = [torch.tensor([True, False, True, True]), torch.ones(4, dtype=torch.bool)]
    assert choose_thresholds(conf, ok, 1.0) == [pytest.approx(0.99)]
    assert choose_thresholds(conf, ok, 0.75) == [pytest.approx(0.5)]  # all leave: 3 of 4 right
    assert choose_thresholds(conf, ok, 0.0) == [pytest.approx(0.5)]
    tie = [torch.tensor([0.9, 0.9, 0.1]), torch.ones(3)]
    ok_tie = [torch.tensor([True, False, True]), torch.ones(3, dtype=torch.bool)]
    assert choose_thresholds(tie, ok_tie, 1.0) == [math.inf]  # cannot take one of two equal confidences


def test_early_exits_config_round_trips():
    cfg = ds.EarlyExits(after=["layer1", "layer2"], channels=8, pool=2, hidden=32, confidence="entropy")
    assert ds.config_from_yaml(ds.config_to_yaml(cfg)) == cfg
    assert ds.config_from_dict({"type": "early_exits", "after": ["a"]}).after == ("a",)
