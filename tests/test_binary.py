"""Binary (BinaryConnect, XNOR-Net) and ternary (TWN) weights: exact levels, straight-through gradients, 1-2 bit files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.quantize.binary import ClipShadowWeights, LowBitLayer, StraightThrough, low_bit_parametrizations
from deepshrink.train.callbacks import TrainState


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 26 * 26, 32), nn.ReLU(), nn.Linear(32, 4))


def test_straight_through_estimator() -> None:
    w = torch.tensor([-2.0, -0.3, 0.0, 0.4, 1.5], requires_grad=True)
    q = torch.where(w.detach() >= 0, 1.0, -1.0)
    out = StraightThrough.apply(w, q, 1.0)
    assert out.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    (out * torch.arange(5.0)).sum().backward()
    assert w.grad.tolist() == [0.0, 1.0, 2.0, 3.0, 0.0]  # BinaryConnect: cancelled where |w| > 1
    w.grad = None
    StraightThrough.apply(w, q, None).sum().backward()
    assert w.grad.tolist() == [1.0] * 5


def test_xnor_levels_and_gradients_reach_shadow_weights() -> None:
    model = _net()
    ds.quantize_(model, ds.BinaryWeights(method="xnor"))
    w = model[3].weight.detach()
    shadow = model[3].parametrizations["weight"].original
    alpha = shadow.detach().abs().mean(dim=1, keepdim=True)
    assert torch.equal(w, torch.where(shadow.detach() >= 0, alpha, -alpha))
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    assert shadow.grad is not None and shadow.grad.abs().sum() > 0


def test_binaryconnect_fixed_scale_and_clip_callback() -> None:
    model = _net()
    ds.quantize_(model, ds.BinaryWeights(method="binaryconnect"))
    for module, p in low_bit_parametrizations(model):
        levels = module.weight.detach().abs().unique().tolist()
        assert len(levels) == 1 and levels[0] == pytest.approx(p.fixed_scale)
        with torch.no_grad():
            module.parametrizations["weight"].original.mul_(100)
    ClipShadowWeights().on_step_end(TrainState(model=model, optimizer=None, total_epochs=1, total_steps=1, steps_per_epoch=1))
    for module, p in low_bit_parametrizations(model):
        assert module.parametrizations["weight"].original.abs().max() <= p.fixed_scale


def test_ternary_codes_threshold_and_scale() -> None:
    model = _net()
    ds.quantize_(model, ds.TernaryWeights(threshold=0.7))
    shadow = model[3].parametrizations["weight"].original.detach()
    w = model[3].weight.detach()
    delta = 0.7 * shadow.abs().mean(dim=1, keepdim=True)
    assert torch.equal(w == 0, shadow.abs() <= delta)
    for row, s in zip(w, shadow):
        kept = s.abs()[row != 0]
        levels = row[row != 0].abs().unique().tolist()
        assert len(levels) == 1 and levels[0] == pytest.approx(float(kept.mean()))
    zeros = float((w == 0).float().mean())
    assert 0.3 < zeros < 0.6  # TWN's 0.7 * mean|w| band holds about 40-50% of Gaussian-like weights


@pytest.mark.parametrize("config,max_bits", [(ds.BinaryWeights(method="xnor"), 1.0), (ds.BinaryWeights(method="binaryconnect"), 1.0),
                                             (ds.TernaryWeights(), 2.0)])
def test_convert_is_exact_and_files_are_one_to_two_bits(config: ds.Config, max_bits: float, tmp_path: Path) -> None:
    model = _net()
    ds.quantize_(model, config)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = model(torch.rand(4, 1, 28, 28)).pow(2).mean()
    loss.backward()
    opt.step()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        trained = model(x)
    report = ds.quantize_(model, ds.Convert())
    assert report.figures["low_bit_layers"] == 3 and isinstance(model[3], LowBitLayer)
    assert torch.equal(model(x), trained)  # conversion keeps exactly what training computed with
    saved = ds.save(model, tmp_path / "b.dsz")
    codes = [t for t in saved.tensors if t["name"].endswith("weight_code")]
    big = [t for t in codes if t["numel"] >= 1000]
    assert big and all(t["bits_per_weight"] <= max_bits for t in big)
    again = ds.load(tmp_path / "b.dsz", model=_net())
    assert torch.equal(again(x), trained)


def test_lenet5_binary_round_trip_from_factory(tmp_path: Path) -> None:
    model = ds.models.create("lenet5")
    ds.quantize_(model, ds.BinaryWeights(exclude=("conv1",)))
    ds.quantize_(model, ds.Convert())
    assert type(model.conv1) is nn.Conv2d and isinstance(model.fc1, LowBitLayer)
    x = torch.rand(2, 1, 28, 28)
    y = model(x)
    saved = ds.save(model, tmp_path / "l.dsz")
    assert saved.file_bytes < 431080 * 4 / 20  # about 1 bit per binarized weight plus conv1 in float
    assert torch.equal(ds.load(tmp_path / "l.dsz")(x), y)


def test_configs_validate() -> None:
    with pytest.raises(ConfigError, match="method"):
        ds.BinaryWeights(method="stochastic")
    with pytest.raises(ConfigError, match="threshold"):
        ds.TernaryWeights(threshold=-0.1)
    assert ds.load_recipe("binary").stages[1].config == ds.Convert()


class _ReadsChildWeight(nn.Module):
    """Like Swin's attention: the parent calls F.linear with its child's weight instead of calling the child."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.qkv.weight, self.qkv.bias)


@pytest.mark.parametrize("config", [ds.BinaryWeights(), ds.TernaryWeights()])
def test_converted_low_bit_layer_weight_reads_like_a_linear(config, tmp_path) -> None:
    model = _ReadsChildWeight()
    ds.quantize_(model, config)
    x = torch.randn(3, 8)
    with torch.no_grad():
        trained = model(x)
    ds.quantize_(model, ds.Convert())
    with torch.no_grad():
        assert torch.equal(model(x), trained)
    ds.save(model, tmp_path / "m.dsz")
    with torch.no_grad():
        assert torch.equal(ds.load(tmp_path / "m.dsz", model=_ReadsChildWeight())(x), trained)
