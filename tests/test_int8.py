"""Linear int8: SNR floors against fp32, real int8 kernels, exact .dsz round trips, the packed codec."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.codec.int_codecs import PackedCodec
from deepshrink.errors import ConfigError, FormatError
from deepshrink.quantize.int8_modules import DynamicInt8Linear, Int8Conv, Int8Linear, IntegerLayer
from deepshrink.surgery import replay_surgery


def snr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.detach(), out.detach()
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum()))


def _round_trip(model: nn.Module, x: tuple[torch.Tensor, ...], tmp_path: Path) -> nn.Module:
    with torch.inference_mode():
        before = model(*x)
    ds.save(model, tmp_path / "m.dsz")
    again = ds.load(tmp_path / "m.dsz")
    with torch.inference_mode():
        assert torch.equal(again(*x), before)
    assert list(again.state_dict()) == list(model.state_dict())
    return again


@pytest.mark.parametrize("observer", ["histogram", "minmax"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_static_int8_layer_snr_floor(kind: str, observer: str) -> None:
    layer = nn.Linear(256, 128) if kind == "linear" else nn.Conv2d(16, 32, 3, padding=1)
    shape = (64, 256) if kind == "linear" else (8, 16, 12, 12)
    calib = [torch.randn(shape) for _ in range(4)]
    ds.quantize_(model := nn.Sequential(layer), ds.Int8(mode="layers", observer=observer), calibration=calib)
    assert isinstance(model[0], (Int8Linear, Int8Conv))
    x = torch.randn(shape)
    assert snr_db(layer(x), model(x)) >= 35.0


def test_dynamic_int8_linear_snr_floor() -> None:
    layer = nn.Linear(384, 1536)
    q = DynamicInt8Linear.from_float(layer)
    x = torch.randn(4, 16, 384)
    assert snr_db(layer(x), q(x)) >= 35.0


def test_graph_mode_computes_in_int8_and_keeps_accuracy(tmp_path: Path) -> None:
    model = ds.models.create("resnet_small").eval()
    x = torch.rand(4, 1, 28, 28)
    ref = model(x)
    report = ds.quantize_(model, ds.Int8(observer="minmax"), calibration=[torch.rand(8, 1, 28, 28) for _ in range(4)])
    assert report.figures["mode"] == "graph"
    seen: list[bool] = []
    for m in model.modules():
        if isinstance(m, Int8Conv):
            m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].is_quantized))
    out = model(x)
    assert seen and all(seen)  # every convolution receives a quantized (uint8) tensor
    assert not any(p.is_floating_point() and p.dim() > 1 for p in model.state_dict().values())  # no float weights left
    assert snr_db(ref, out) >= 20.0
    _round_trip(model, (x,), tmp_path)


def test_lenet5_graph_per_tensor_round_trip_from_factory(tmp_path: Path) -> None:
    model = ds.models.create("lenet5").eval()
    ds.quantize_(model, ds.Int8(weights="per_tensor", observer="minmax"), calibration=[torch.rand(8, 1, 28, 28)])
    assert model.int8_graph.fc1.weight_scale.shape == ()
    again = _round_trip(model, (torch.rand(3, 1, 28, 28),), tmp_path)
    assert type(again).__name__ == "LeNet5"


def test_layers_mode_and_fallback_for_untraceable_models(tmp_path: Path) -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
                x = x * 2
            return self.b(torch.relu(self.a(x)))

    calib = [torch.rand(16, 8)]
    with pytest.raises(ConfigError, match="mode='layers'"):
        ds.quantize_(Branchy(), ds.Int8(mode="graph"), calibration=calib)
    model = Branchy()
    report = ds.quantize_(model, ds.Int8(), calibration=calib)
    assert report.figures["mode"] == "layers" and "graph_fallback" in report.figures
    assert isinstance(model.a, Int8Linear) and model.a.float_io
    x = torch.rand(5, 8)
    before = model(x)
    ds.save(model, tmp_path / "b.dsz")
    assert torch.equal(ds.load(tmp_path / "b.dsz", model=Branchy())(x), before)


def test_graph_that_converts_but_cannot_run_falls_back_to_layers(tmp_path: Path) -> None:
    # ShuffleNetV2 traces and converts, but torch's quantized mean after its channel shuffle has no kernel
    # for the layout ("required rank 4 tensor to use channels_last format"): found at conversion, not later.
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    factory = lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()  # noqa: E731
    calib = [torch.randn(2, 3, 32, 32) for _ in range(2)]
    with pytest.raises(ConfigError, match="mode='layers'"):
        ds.quantize_(factory(), ds.Int8(mode="graph"), calibration=calib)
    model = factory()
    reference = copy.deepcopy(model)
    report = ds.quantize_(model, ds.Int8(), calibration=calib)
    assert report.figures["mode"] == "layers" and "channels_last" in report.figures["graph_fallback"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got, want = model(x), reference(x)
    assert got.shape == (2, 10) and float(torch.nn.functional.cosine_similarity(got, want).mean()) > 0.9
    ds.save(model, tmp_path / "s.dsz")
    assert torch.equal(ds.load(tmp_path / "s.dsz", model=factory())(x), got)


def test_dynamic_int8_round_trip_and_skips(tmp_path: Path) -> None:
    model = ds.models.create("lenet5")
    report = ds.quantize_(model, ds.Int8(activations="dynamic", exclude=("fc2",)))
    assert report.changed == ["fc1"] and "conv1" in report.skipped
    assert isinstance(model.fc1, DynamicInt8Linear) and type(model.fc2) is nn.Linear
    _round_trip(model, (torch.rand(2, 1, 28, 28),), tmp_path)


def test_minilm_dynamic_int8_keeps_embeddings(tmp_path: Path) -> None:
    fp32 = ds.models.create("minilm")
    model = copy.deepcopy(fp32)
    ds.quantize_(model, ds.Int8(activations="dynamic"))
    assert sum(isinstance(m, DynamicInt8Linear) for m in model.modules()) == 36  # 6 layers x (q, k, v, o, up, down)
    sentences = ["Quantized models should run faster.", "The cat sat on the mat.", "def f(x): return x + 1"]
    cos = torch.nn.functional.cosine_similarity(model.encode(sentences), fp32.encode(sentences))
    assert float(cos.mean()) >= 0.99
    batch = model.tokenize(sentences)
    _round_trip(model, (batch["input_ids"], batch["attention_mask"]), tmp_path)


def test_static_needs_calibration_and_configs_validate() -> None:
    with pytest.raises(ConfigError, match="calibration"):
        ds.quantize_(ds.models.create("lenet5"), ds.Int8())
    with pytest.raises(ConfigError, match="activations"):
        ds.Int8(activations="weights-only")
    with pytest.raises(ConfigError, match="calibration_batches"):
        ds.Int8(calibration_batches=0)
    model = ds.models.create("lenet300")
    ds.quantize_(model, ds.Int8(activations="dynamic"))
    with pytest.raises(ConfigError, match="already quantized"):
        ds.quantize_(model, ds.Int8(activations="dynamic"))
    assert ds.config_from_yaml(ds.config_to_yaml(ds.Int8(exclude=("fc3",)))) == ds.Int8(exclude=("fc3",))


def test_hostile_surgery_entries_raise_format_error() -> None:
    bad = [
        {"op": "int8_dynamic", "modules": ["nope"], "per_channel": True, "reduce_range": False, "weight_bits": 8},
        {"op": "int8_dynamic", "modules": ["fc1"], "per_channel": 1, "reduce_range": False, "weight_bits": 8},
        {"op": "int8_layers", "modules": ["fc1"], "per_channel": True, "weight_bits": 99},
        {"op": "int8_graph", "per_channel": True, "reduce_range": False, "weight_bits": 8, "exclude": [],
         "inputs": [["float32", [1, 10**9]]]},
        {"op": "int8_graph", "per_channel": True, "reduce_range": False, "weight_bits": 8, "exclude": [],
         "inputs": [["float32", [1, 784]]], "evil": 1},
    ]
    for entry in bad:
        with pytest.raises(FormatError):
            replay_surgery(ds.models.create("lenet300"), [entry])


def test_packed_codec_round_trips_and_rejects_bad_blobs() -> None:
    rng = np.random.default_rng(0)
    for lo, hi, width in ((-8, 7, 4), (0, 1, 1), (-1, 1, 2), (-128, 127, 8), (3, 9, 3)):
        values = rng.integers(lo, hi + 1, size=1001).astype(np.int8).view(np.uint8)
        enc = PackedCodec().encode(values)
        assert enc.params["bits"] == width and len(enc.blobs[0]) == (1001 * width + 7) // 8
        assert np.array_equal(PackedCodec().decode(enc.params, list(enc.blobs), np.dtype("uint8"), 1001), values)
    with pytest.raises(FormatError):
        PackedCodec().decode({"bits": 4, "lo": -8}, [b"\x00" * 3], np.dtype("uint8"), 1001)
    with pytest.raises(FormatError):
        PackedCodec().decode({"bits": 9, "lo": 0}, [b""], np.dtype("uint8"), 0)
    assert PackedCodec().encode(np.zeros(4, dtype=np.uint16)) is None


def test_integer_layers_hold_only_plain_tensors() -> None:
    layer = Int8Conv(2, 3, 4, (3, 3))
    assert all(not t.is_quantized for t in layer.state_dict().values())
    assert isinstance(layer, IntegerLayer) and layer.weight.dtype == torch.int8

    layer.packed()
    twin = copy.deepcopy(layer)  # the packed cache is dropped from copies and rebuilt on use
    assert twin._packed is None and twin.packed() is not None


def test_packed_weights_follow_set_weight_and_loading() -> None:
    lin = nn.Linear(8, 4)
    q = DynamicInt8Linear.from_float(lin)
    x = torch.randn(2, 8)
    before = q(x)
    codes, scale, zp = q.weight.clone(), q.weight_scale.clone(), q.weight_zero_point.clone()
    q.set_weight(-codes, scale, zp, q.bias)
    assert not torch.equal(q(x), before)  # the kernel sees the new codes, not a stale packed copy
    q.load_state_dict({"weight": codes, "weight_scale": scale, "weight_zero_point": zp, "bias": q.bias.clone()})
    assert torch.equal(q(x), before)


def test_graph_rebuild_refuses_huge_base_models_on_the_meta_probe() -> None:
    with torch.device("meta"):
        probe = ds.models.create("lenet300", in_features=10**8)  # 120 GB of fp32 weights, never allocated
    entry = {"op": "int8_graph", "per_channel": True, "reduce_range": False, "weight_bits": 8, "exclude": [],
             "inputs": [["float32", [1, 784]]]}
    with pytest.raises(FormatError, match="more than the limit"):
        replay_surgery(probe, [entry])


def test_dynamic_int8_keeps_layers_whose_parent_reads_their_weight(tmp_path: Path) -> None:
    class ReadsWeight(nn.Module):  # as Swin's window attention: the parent uses qkv.weight in a functional call
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.out = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(nn.functional.linear(x, self.qkv.weight, self.qkv.bias)))

    torch.manual_seed(0)
    x = torch.randn(4, 8)
    model = ReadsWeight()
    report = ds.quantize_(model, ds.Int8(activations="dynamic"), example_inputs=(x,))
    assert report.changed == ["out"] and "reads its weight directly" in report.skipped["qkv"]
    assert isinstance(model.out, DynamicInt8Linear) and type(model.qkv) is nn.Linear
    y = model(x)
    ds.save(model, tmp_path / "d.dsz")
    assert torch.equal(ds.load(tmp_path / "d.dsz", model=ReadsWeight())(x), y)
