"""Loading a model whose constructor cannot run on the meta device (torchvision's RegNet computes its widths with torch ops)."""

from __future__ import annotations

import pytest
import torch

import deepshrink as ds
from deepshrink.errors import FormatError
from deepshrink.surgery import set_model_spec


def test_regnet_loads_back_exactly(tmp_path):
    model = ds.models.create("torchvision:regnet_x_400mf", num_classes=7).eval()
    ds.save(model, tmp_path / "r.dsz")
    loaded = ds.load(tmp_path / "r.dsz").eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded(x), model(x))


def test_a_file_cannot_make_the_real_build_allocate_more(tmp_path):
    model = ds.models.create("torchvision:regnet_x_400mf", num_classes=7)
    for kwargs in ({"num_classes": 10**9}, {"num_classes": 7, "stem_width": 10**6}):
        set_model_spec(model, "torchvision:regnet_x_400mf", kwargs)
        ds.save(model, tmp_path / "r.dsz")
        with pytest.raises(FormatError, match="bad arguments for architecture"):
            ds.load(tmp_path / "r.dsz")
