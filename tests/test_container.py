"""The .dsz container: save/load equality, determinism, inspect, skeletons, atomic writes, exports."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import deepshrink as ds
from deepshrink.codec import container
from deepshrink.errors import FormatError, SpecError


class Mask(nn.Module):
    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


class Shared(nn.Module):
    def __init__(self, w: torch.Tensor, k: int) -> None:
        super().__init__()
        flat = w.detach().flatten()
        self.centroids = nn.Parameter(torch.quantile(flat, torch.linspace(0, 1, k)))
        self.register_buffer("labels", (flat[:, None] - self.centroids[None]).abs().argmin(1).reshape(w.shape))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.centroids[self.labels] * (w != 0)


def compressed_lenet300() -> nn.Module:
    torch.manual_seed(0)
    model = ds.models.create("lenet300")
    for layer in (model.fc1, model.fc2, model.fc3):
        w = layer.weight.detach()
        keep = w.abs() >= w.abs().flatten().kthvalue(int(0.92 * w.numel())).values
        parametrize.register_parametrization(layer, "weight", Mask(keep.float()))
        parametrize.register_parametrization(layer, "weight", Shared(layer.weight, 32))
    return model


def test_save_load_outputs_equal_and_bytes_deterministic(tmp_path):
    model = compressed_lenet300().eval()
    a, b = tmp_path / "a.dsz", tmp_path / "b.dsz"
    report = ds.save(model, a, meta={"recipe": "test"})
    ds.save(model, b, meta={"recipe": "test"})
    assert a.read_bytes() == b.read_bytes()
    assert report.file_bytes == a.stat().st_size
    assert report.ratio > 20  # 8% density, 5-bit indices, entropy coded
    assert {t["codec"] for t in report.tensors if t["name"].endswith("weight")} <= {"shared", "sparse_shared"}
    loaded = ds.load(a)
    assert type(loaded) is type(model) and not parametrize.is_parametrized(loaded.fc1)
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    eff = ds.codec.effective_state_dict(model)
    for key, value in ds.decompress(a).items():
        assert torch.equal(value, eff[key])
    assert "fc1.parametrizations.weight.original" not in ds.decompress(a)


def test_inspect_reports_codecs_sizes_and_ratio(tmp_path):
    path = tmp_path / "m.dsz"
    ds.save(compressed_lenet300(), path, meta={"input_shape": [1, 28, 28]})
    info = ds.inspect(path)
    assert info["architecture"] == {"spec": "lenet300", "kwargs": {}}
    assert info["meta"] == {"input_shape": [1, 28, 28]}
    by_name = {t["name"]: t for t in info["tensors"]}
    assert sorted(by_name) == sorted(ds.models.create("lenet300").state_dict())
    fc1 = by_name["fc1.weight"]
    assert fc1["shape"] == [300, 784] and fc1["codec"] in ("shared", "sparse_shared") and fc1["bits_per_weight"] < 2
    totals = info["totals"]
    assert totals["numel"] == 266_610 and totals["file_bytes"] == path.stat().st_size
    assert totals["ratio_vs_fp32"] == pytest.approx(4 * 266_610 / path.stat().st_size)
    assert totals["payload_bytes"] + totals["header_bytes"] == totals["file_bytes"]
    json.dumps(info)


def test_dtypes_buffers_and_int_tensors_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model[0].half()
    model[2].to(torch.bfloat16)
    with torch.no_grad():
        model[0].weight[0, :4] = torch.tensor([-0.0, float("nan"), float("inf"), 0.0])
        model[1].running_mean.fill_(0.25)
    skeleton = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    path = tmp_path / "mixed.dsz"
    ds.save(model, path)
    with pytest.raises(SpecError, match="model=skeleton"):
        ds.load(path)
    loaded = ds.load(path, model=skeleton)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and v1.dtype == v2.dtype
        assert np.array_equal(v1.view(torch.int16 if v1.element_size() == 2 else v1.dtype).numpy(),
                              v2.view(torch.int16 if v2.element_size() == 2 else v2.dtype).numpy())
    assert loaded[1].num_batches_tracked.dtype == torch.int64


def test_wrong_skeleton_is_a_format_error(tmp_path):
    path = tmp_path / "m.dsz"
    ds.save(nn.Linear(4, 3), path)
    with pytest.raises(FormatError, match="shape"):
        ds.load(path, model=nn.Linear(3, 4))
    with pytest.raises(FormatError, match="missing"):
        ds.load(path, model=nn.Sequential(nn.Linear(4, 3)))


def test_unknown_factory_spec_is_a_format_error_and_imports_nothing(tmp_path):
    model = nn.Linear(2, 2)
    ds.surgery.set_model_spec(model, "os:system", {})
    path = tmp_path / "m.dsz"
    ds.save(model, path)
    with pytest.raises(FormatError, match="cannot rebuild"):
        ds.load(path)


def test_surgery_log_is_stored_and_unknown_ops_refused(tmp_path):
    model = ds.models.create("lenet300")
    ds.surgery.record_surgery(model, {"op": "no_such_op", "module": "fc1"})
    path = tmp_path / "m.dsz"
    ds.save(model, path)
    assert ds.inspect(path)["surgery"] == [{"op": "no_such_op", "module": "fc1"}]
    with pytest.raises(FormatError, match="unknown op"):
        ds.load(path)


def test_atomic_write_keeps_old_file_when_saving_fails(tmp_path):
    path = tmp_path / "m.dsz"
    ds.save(nn.Linear(2, 2), path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="JSON"):
        ds.save(nn.Linear(2, 2), path, meta={"bad": object()})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.dsz"]


def test_missing_file_and_pickle_are_refused(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        ds.load(tmp_path / "none.dsz")
    fake = tmp_path / "model.dsz"
    torch.save(nn.Linear(2, 2).state_dict(), fake)
    with pytest.raises(FormatError, match="pickle"):
        ds.load(fake)


def test_export_safetensors_equals_decompress(tmp_path):
    from safetensors.torch import load_file

    path = tmp_path / "m.dsz"
    ds.save(compressed_lenet300(), path)
    ds.export_safetensors(path, tmp_path / "m.safetensors")
    exported = load_file(tmp_path / "m.safetensors")
    for key, value in ds.decompress(path).items():
        assert torch.equal(exported[key], value)


def test_export_onnx_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "m.dsz"
    model = compressed_lenet300().eval()
    ds.save(model, path, meta={"input_shape": [1, 28, 28]})
    ds.export_onnx(path, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    x = torch.randn(1, 1, 28, 28)
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert np.allclose(y, model(x).numpy(), atol=1e-5)


def test_declared_sizes_are_capped_before_decoding(tmp_path):
    path = tmp_path / "m.dsz"
    ds.save(nn.Linear(64, 64), path)
    buf = path.read_bytes()
    with pytest.raises(FormatError, match="max_bytes"):
        container.parse(buf, max_bytes=1000)
