"""Architectures named by a file cannot make load() allocate without bound or read a directory."""

from __future__ import annotations

import resource
import time

import pytest

import deepshrink as ds
from deepshrink.surgery import set_model_spec


def test_huge_sizes_in_the_header_raise_before_allocating(tmp_path):
    model = ds.models.create("lenet300")
    set_model_spec(model, "lenet300", {"in_features": 10**9})  # 1.2 TB of fp32 if it were built
    path = tmp_path / "huge.dsz"
    ds.save(model, path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with pytest.raises(ds.FormatError, match="the model needs"):
        ds.load(path)
    assert time.perf_counter() - t < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: no giant allocation


@pytest.mark.parametrize("spec, kwargs", [("resnet_small", {"blocks": 10**6}), ("mlp", {"hidden": [4] * 10**5})])
def test_huge_layer_counts_in_the_header_raise_before_building(tmp_path, spec, kwargs):
    model = ds.models.create(spec)
    set_model_spec(model, spec, kwargs)  # a million modules to build, even on the meta device
    path = tmp_path / "deep.dsz"
    ds.save(model, path)
    t = time.perf_counter()
    with pytest.raises(ds.FormatError, match="256"):
        ds.load(path)
    assert time.perf_counter() - t < 5


def test_bad_kwargs_in_the_header_raise_format_error(tmp_path):
    model = ds.models.create("lenet300")
    set_model_spec(model, "lenet300", {"no_such_argument": 1})
    ds.save(model, tmp_path / "bad.dsz")
    with pytest.raises(ds.FormatError):
        ds.load(tmp_path / "bad.dsz")


def test_local_directory_spec_needs_the_callers_consent(tmp_path):
    model = ds.models.create("lenet300")
    set_model_spec(model, "hf:/etc", {})
    ds.save(model, tmp_path / "hf.dsz")
    with pytest.raises(ds.FormatError, match="model="):
        ds.load(tmp_path / "hf.dsz")
    # With an explicit skeleton it loads.
    assert ds.load(tmp_path / "hf.dsz", model=ds.models.create("lenet300")).fc1.in_features == 784


def test_modules_that_need_their_state_version_load(tmp_path):
    # torchvision's MNASNet refuses a state dict without module versions (torch.save keeps them in
    # `_metadata`); load() gives the skeleton's own, so such models round-trip like any other.
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_5(num_classes=10).eval()
    ds.save(model, tmp_path / "m.dsz")
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(ds.load(tmp_path / "m.dsz", model=torchvision.models.mnasnet0_5(num_classes=10))(x), model(x))
