"""Quantization-aware training: straight-through gradients, conversion to the real int8 model, packed 4-bit files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.quantize.graph import qconfig
from deepshrink.quantize.int8_modules import Int8Conv, Int8Linear


def _train_steps(model: nn.Module, steps: int = 3) -> None:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = model(torch.rand(8, 1, 28, 28)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("bits", [8, 4])
def test_fake_quant_gradient_is_straight_through(bits: int) -> None:
    fq = qconfig(per_channel=False, reduce_range=False, observer="minmax", weight_bits=bits, qat=True).weight()
    fq(torch.tensor([-1.0, 1.0]))  # sets the range [-1, 1]
    fq.disable_observer()
    w = torch.tensor([-3.0, -0.5, 0.1, 0.7, 2.5], requires_grad=True)
    out = fq(w)
    out.sum().backward()
    assert w.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # identity inside the range, zero outside
    levels = torch.unique(out.detach())
    assert len(levels) <= 2**bits and torch.allclose(out[1:4].detach(), w[1:4].detach(), atol=1.0 / 2 ** (bits - 1))


@pytest.mark.parametrize("bits", [8, 4])
def test_qat_trains_converts_and_round_trips(bits: int, tmp_path: Path) -> None:
    model = ds.models.create("lenet5")
    report = ds.quantize_(model, ds.QAT(bits=bits), example_inputs=(torch.rand(2, 1, 28, 28),))
    assert report.figures["layers"] == 4
    w0 = model.int8_graph.fc1.weight.detach().clone()
    _train_steps(model)
    assert not torch.equal(model.int8_graph.fc1.weight, w0)  # shadow weights learn through the fake quantizers
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        fake = model(x)
    assert ds.quantize_(model, ds.Convert()).figures["int8_layers"] == 4
    g = model.int8_graph
    assert isinstance(g.conv1, Int8Conv) and isinstance(g.fc1, Int8Linear)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    assert int(g.fc1.weight.min()) >= lo and int(g.fc1.weight.max()) <= hi
    with torch.inference_mode():
        real = model(x)
    # the integer model computes what training simulated (up to one activation step per layer)
    assert (real - fake).abs().max() <= 0.1 * fake.abs().max()
    saved = ds.save(model, tmp_path / "q.dsz")
    weights = {t["name"]: t for t in saved.tensors if t["name"].endswith(".weight")}
    if bits == 4:
        assert all(t["codec"] == "packed" and t["bits_per_weight"] == 4.0 for t in weights.values())
    with torch.inference_mode():
        assert torch.equal(ds.load(tmp_path / "q.dsz")(x), real)


def test_qat_with_batch_norm_folds_and_matches_ptq_layout(tmp_path: Path) -> None:
    model = ds.models.create("resnet_small")
    ds.quantize_(model, ds.QAT(bits=8), example_inputs=(torch.rand(2, 1, 28, 28),))
    _train_steps(model, 2)
    ds.quantize_(model, ds.Convert())
    ptq = ds.models.create("resnet_small").eval()
    ds.quantize_(ptq, ds.Int8(observer="minmax"), calibration=[torch.rand(4, 1, 28, 28)])
    assert list(model.state_dict()) == list(ptq.state_dict())  # no batch norm left: folded into the int8 convs
    x = torch.rand(3, 1, 28, 28)
    with torch.inference_mode():
        y = model(x)
    ds.save(model, tmp_path / "r.dsz")
    with torch.inference_mode():
        assert torch.equal(ds.load(tmp_path / "r.dsz")(x), y)


def test_qat_config_and_errors() -> None:
    with pytest.raises(ConfigError, match="bits"):
        ds.QAT(bits=2)
    model = ds.models.create("lenet300")
    ds.quantize_(model, ds.Int8(activations="dynamic"))
    with pytest.raises(ConfigError, match="float model"):
        ds.quantize_(model, ds.QAT(), example_inputs=(torch.rand(1, 784),))
    with pytest.raises(ConfigError, match="calibration"):
        ds.quantize_(ds.models.create("lenet300"), ds.QAT())
    assert ds.load_recipe("qat4").stages[0].config == ds.QAT(bits=4)


class _FunctionalDropout(nn.Module):
    """A block that reads ``self.training`` in functional calls (like torchvision's stochastic depth)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 26 * 26, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import stochastic_depth

        h = torch.relu(self.conv(x))
        h = stochastic_depth(h, 0.5, "row", self.training)
        return self.fc(torch.nn.functional.dropout(h.flatten(1), 0.5, self.training))


def test_qat_converted_model_is_deterministic_and_loads_exactly(tmp_path: Path) -> None:
    """The converted graph must not keep train-mode path dropping (the graph is traced in eval mode)."""
    torch.manual_seed(0)
    model = _FunctionalDropout()
    ds.quantize_(model, ds.QAT(bits=8), example_inputs=(torch.rand(2, 1, 28, 28),))
    _train_steps(model, 2)
    ds.quantize_(model, ds.Convert())
    x = torch.rand(4, 1, 28, 28)
    with torch.inference_mode():
        first, second = model(x), model(x)
    assert torch.equal(first, second)
    ds.save(model, tmp_path / "d.dsz")
    with torch.inference_mode():
        assert torch.equal(ds.load(tmp_path / "d.dsz", model=_FunctionalDropout())(x), first)


def test_qat_refuses_a_model_whose_int8_graph_cannot_run() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="ShuffleNetV2.*int8 graph runs after conversion.*exclude"):
        ds.quantize_(model, ds.QAT(bits=8), example_inputs=(torch.rand(2, 3, 32, 32),))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
