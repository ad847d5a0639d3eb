"""Network slimming: the exact L1 subgradient on BN scales, its effect in training, the config and the recipe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.prune.slimming import NetworkSlimming, SlimmingPenalty, bn_l1, bn_scales
from deepshrink.recipe import load_recipe, recipe_from_dict


def test_penalty_adds_exact_subgradient_to_every_bn_scale_only():
    model = ds.models.create("vgg_small", image_size=8)
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(-1, 1)
    out = model(torch.randn(4, 1, 8, 8)).sum()
    out.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    cb = SlimmingPenalty(strength=0.01)
    state = ds.TrainState(model=model)
    cb.on_train_begin(state)
    cb.on_before_step(state)
    scale_names = {f"{name}.weight" for name in bn_scales(model)}
    for n, p in model.named_parameters():
        want = grads[n] + 0.01 * torch.sign(p.detach()) if n in scale_names else grads[n]
        torch.testing.assert_close(p.grad, want)
    with pytest.raises(ConfigError, match="strength"):
        SlimmingPenalty(strength=-1.0)
    with pytest.raises(ConfigError, match="batch-norm"):
        SlimmingPenalty().on_train_begin(ds.TrainState(model=ds.models.create("lenet5")))


def test_penalty_drives_bn_scales_down_in_the_engine():
    data = ds.data.load("synthetic:classification:128")
    cfg = ds.TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=0.1, progress=False)
    plain = ds.models.create("resnet_small", image_size=8, num_classes=4)
    slim = ds.models.create("resnet_small", image_size=8, num_classes=4)
    slim.load_state_dict(plain.state_dict())
    ds.finetune(plain, data, cfg)
    ds.finetune(slim, data, cfg, [SlimmingPenalty(strength=0.5)])
    assert bn_l1(slim) < 0.8 * bn_l1(plain)


def test_network_slimming_config_report_and_recipe():
    cfg = NetworkSlimming(strength=1e-3)
    assert ds.config_from_yaml(ds.config_to_yaml(cfg)) == cfg
    with pytest.raises(ConfigError, match="strength"):
        NetworkSlimming(strength=-0.1)
    model = ds.models.create("resnet_small", image_size=8, num_classes=4)
    report = ds.prune_(model, cfg)
    assert report.changed == [] and report.figures["bn_layers"] == 9
    assert report.figures["bn_l1"] == pytest.approx(bn_l1(model))
    with pytest.raises(ConfigError, match="batch-norm"):
        ds.prune_(ds.models.create("lenet5"), cfg)
    stages = load_recipe("slimming").stages
    assert isinstance(stages[0].config, NetworkSlimming) and stages[1].config.importance == "bn_scale"
    assert load_recipe("taylor").stages[0].config.importance == "taylor"
    assert load_recipe("scop").stages[0].config.importance == "scop"


def test_slimming_recipe_runs_and_halves_the_channels():
    data = ds.data.load("synthetic:classification:64")
    model = ds.models.create("vgg_small", image_size=8, num_classes=4)
    recipe = load_recipe("slimming").to_dict()
    for stage in recipe["stages"]:
        stage["finetune"].update(epochs=1, progress=False)
    if "measure_latency" in recipe["stages"][1]["config"]:
        recipe["stages"][1]["config"]["measure_latency"] = False  # timing is not what this test checks
    report = ds.run_recipe(model, data, recipe_from_dict(recipe), example_inputs=ds.models.example_inputs(model, data))
    assert [s["name"] for s in report.stages] == ["sparsity", "prune"]
    assert model.features[0][0].out_channels == 4 and model.features[0][1].num_features == 4
