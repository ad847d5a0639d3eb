"""SCOP: knockoffs match the data's moments and carry no label; the control factors single out the informative channel."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import deepshrink as ds
from deepshrink.data.bundle import DataBundle
from deepshrink.errors import ConfigError
from deepshrink.prune.importance import build_importance
from deepshrink.prune.scop import Knockoffs, SCOPImportance, learn_control_factors, output_layers


def _bundle(x: torch.Tensor, y: torch.Tensor) -> DataBundle:
    return DataBundle("t", TensorDataset(x, y), TensorDataset(x[:8], y[:8]), TensorDataset(x[:8], y[:8]),
                      tuple(x.shape[1:]), int(y.max()) + 1)


def test_gaussian_knockoffs_match_mean_and_covariance_and_ignore_the_real_batch():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=g)
    x = torch.randn(3000, 6, generator=g) @ mix + torch.arange(6.0)
    k = Knockoffs.fit(x, rank=6)
    xk = k.sample(20000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(xk.mean(0), x.mean(0), atol=0.1, rtol=0)
    cov, cov_k = torch.cov(x.T), torch.cov(xk.T)
    assert float((cov - cov_k).abs().max()) < 0.05 * float(cov.abs().max())
    # Drawn independently of the real data: no correlation with the real samples.
    cross = torch.corrcoef(torch.cat([x, xk[:3000]], 1).T)[:6, 6:]
    assert float(cross.abs().max()) < 0.08


def test_knockoffs_stay_in_range_and_integer_inputs_keep_each_position_marginal():
    x = torch.rand(300, 1, 6, 6)
    xk = Knockoffs.fit(x, rank=4).sample(50, torch.Generator().manual_seed(0))
    assert xk.shape == (50, 1, 6, 6) and float(xk.min()) >= 0 and float(xk.max()) <= 1
    tokens = torch.stack([torch.randint(0, 5, (200,)), torch.randint(100, 105, (200,))], 1)
    tk = Knockoffs.fit(tokens).sample(500, torch.Generator().manual_seed(0))
    assert tk.dtype == tokens.dtype
    assert set(tk[:, 0].tolist()) <= set(range(5)) and set(tk[:, 1].tolist()) <= set(range(100, 105))
    with pytest.raises(ValueError, match="2 samples"):
        Knockoffs.fit(torch.zeros(1, 3))


def _informative_unit_model() -> nn.Sequential:
    # Hidden unit 0 reads the label-carrying feature 0; units 1-3 read noise features. The classifier
    # listens to every unit with the same weight, so magnitude cannot tell them apart.
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4) * 2)
        model[0].bias.fill_(1.0)
        model[2].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]]) * torch.tensor([-1.0, 1, 1, 1]))
        model[2].bias.zero_()
    return model


def test_scop_factors_rank_the_informative_channel_first_and_leave_the_model_unchanged():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (768,), generator=g)
    x = torch.randn(768, 4, generator=g)
    x[:, 0] = (2 * y - 1).float() * 1.5 + 0.3 * x[:, 0]
    model = _informative_unit_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = _bundle(x, y)
    betas = learn_control_factors(model, data, [model[0]], epochs=6, lr=1e-2)
    beta = betas[model[0]]
    assert float(beta[0]) > float(beta[1:].max()) + 0.2, beta
    assert float(beta.min()) >= 0 and float(beta.max()) <= 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.requires_grad for p in model.parameters()) and model.training
    assert not model[0]._forward_hooks
    imp = build_importance(ds.ChannelPruning(importance="scop", seed=0), model, (x[:1],), data)
    assert isinstance(imp, SCOPImportance) and set(imp.scores) == {model[0]}  # the output layer is not mixed
    assert int(imp.scores[model[0]].argmax()) == 0 and float(imp.scores[model[0]].max()) <= 1


def test_scop_needs_classification_data_and_honours_ignored_layers():
    model = ds.models.create("lenet5")
    inputs = ds.models.example_inputs(model)
    with pytest.raises(ConfigError, match="scop"):
        build_importance(ds.ChannelPruning(importance="scop"), model, inputs, None)
    assert output_layers(model, inputs) == {model.fc2}
    data = ds.data.load("synthetic:classification:64")
    small = ds.models.create("cnn_small", image_size=8, num_classes=4)
    imp = SCOPImportance.learn(small, data, ds.ChannelPruning(importance="scop", ignored=("conv1",)), epochs=1)
    assert set(imp.scores) == {small.conv2, small.fc1}
