"""``timm:NAME`` models: built offline, compressed, saved and rebuilt from the file's spec alone, safely."""

from __future__ import annotations

import time

import pytest
import torch

import deepshrink as ds
from deepshrink.errors import FormatError, SpecError
from deepshrink.prune.verify import removal_equivalence
from deepshrink.surgery import set_model_spec

pytest.importorskip("timm")


def test_a_timm_model_is_built_with_random_init_and_remembers_its_spec() -> None:
    model = ds.models.create("timm:resnet10t", num_classes=7)
    assert ds.surgery.model_spec(model) == {"spec": "timm:resnet10t", "kwargs": {"num_classes": 7}}
    (x,) = ds.models.example_inputs(model)
    assert tuple(x.shape[1:]) == model.example_input_shape == (3, 176, 176)  # timm's own test size for resnet10t
    assert model.eval()(x).shape == (1, 7)
    vit = ds.models.create("timm:deit_tiny_patch16_224", num_classes=3, img_size=32)
    assert vit.example_input_shape == (3, 32, 32) and vit(torch.randn(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("spec,kwargs,match", [
    ("timm:no_such_net", {}, "unknown timm model"),
    ("timm:hf-hub:timm/resnet18.a1_in1k", {}, "unknown timm model"),  # timm would fetch its config from the Hub
    ("timm:local-dir:/tmp", {}, "unknown timm model"),  # or read it from a directory
    ("timm:resnet10t", {"pretrained": True}, "does not take 'pretrained'"),
    ("timm:resnet10t", {"pretrained_cfg_overlay": {"file": "/etc/passwd"}}, "does not take 'pretrained_cfg_overlay'"),
    ("timm:resnet10t", {"checkpoint_path": "x.pth"}, "does not take 'checkpoint_path'"),
    ("timm:resnet10t", {"num_classes": True}, "wrong type"),
    ("timm:deit_tiny_patch16_224", {"img_size": [32, 32, 3]}, "two ints"),
])
def test_bad_timm_specs_name_the_problem(spec: str, kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        ds.models.create(spec, **kwargs)


def test_a_pruned_timm_model_reloads_from_its_file_alone(tmp_path) -> None:
    torch.manual_seed(0)
    model = ds.models.create("timm:resnet10t", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    result = removal_equivalence(model, ds.ChannelPruning(ratio=0.5, importance="l1", measure_latency=False), (x,))
    assert result["max_rel_diff"] < 1e-4 and result["param_fraction"] < 0.5
    path = tmp_path / "r.dsz"
    ds.save(result["pruned"], path)
    again = ds.load(path)  # no skeleton: the spec and the surgery log rebuild it
    assert torch.equal(again(x), result["pruned"](x))


def test_transformer_heads_of_a_timm_vit_prune_and_reload(tmp_path) -> None:
    torch.manual_seed(0)
    model = ds.models.create("timm:deit_tiny_patch16_224", num_classes=10, img_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    cfg = ds.ChannelPruning(ratio=0.25, head_ratio=0.34, importance="l1", measure_latency=False)
    result = removal_equivalence(model, cfg, (x,))
    pruned = result["pruned"]
    assert result["max_rel_diff"] < 1e-4 and result["param_fraction"] < 0.9
    ds.save(pruned, tmp_path / "v.dsz")
    assert torch.equal(ds.load(tmp_path / "v.dsz")(x), pruned(x))


@pytest.mark.parametrize("kwargs", [{"pretrained": True}, {"pretrained_cfg_overlay": {"file": "/etc/passwd"}},
                                    {"num_classes": 10**9}, {"img_size": 10**6}])
def test_a_file_cannot_make_timm_fetch_read_or_allocate(tmp_path, kwargs: dict) -> None:
    model = ds.models.create("timm:resnet10t", num_classes=10)
    set_model_spec(model, "timm:resnet10t", kwargs)
    ds.save(model, tmp_path / "evil.dsz")
    start = time.perf_counter()
    with pytest.raises(FormatError):
        ds.load(tmp_path / "evil.dsz")
    assert time.perf_counter() - start < 10
