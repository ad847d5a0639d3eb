"""Zeroed channels equal removed channels over torchvision families (the whole zoo: benchmarks/bench_structured_zoo.py)."""

from __future__ import annotations

import pytest
import torch

import deepshrink as ds
from deepshrink.prune.verify import removal_equivalence

# One small member of each torchvision family the dependency graph supports (resnet18 and
# mobilenet_v2 are in test_channel_pruning.py); inputs are small so that the test stays fast.
FAMILIES = [
    ("mobilenet_v3_small", 64),   # hard-swish, squeeze-excitation
    ("efficientnet_b0", 64),      # squeeze-excitation, stochastic depth
    ("squeezenet1_1", 64),        # fire modules: concatenated expand branches
    ("mnasnet0_5", 64),
    ("googlenet", 64),            # inception branches concatenated
    ("regnet_x_400mf", 64),       # grouped convolutions (their channels are kept)
    ("convnext_tiny", 64),        # layer norm, layer scale
]


@pytest.mark.parametrize("name,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_torchvision_family_prunes_exactly(name: str, size: int) -> None:
    torch.manual_seed(0)
    kwargs = {"num_classes": 10}
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=False)
    model = ds.models.create(f"torchvision:{name}", **kwargs)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # non-trivial statistics, so that a forgotten norm shift would show
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    x = torch.randn(2, 3, size, size)
    result = removal_equivalence(model, ds.ChannelPruning(ratio=0.5, importance="l1", measure_latency=False), (x,))
    assert result["max_rel_diff"] < 1e-4
    assert result["param_fraction"] < 0.8  # it really removed channels
    assert result["pruned"](x).shape == (2, 10)


def test_a_model_the_tracer_cannot_follow_is_refused_clearly_and_left_unchanged() -> None:
    # ShuffleNet's channel shuffle (view, transpose, view) defeats Torch-Pruning's index mapping.
    model = ds.models.create("torchvision:shufflenet_v2_x0_5", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ds.UnsupportedModelError, match="channel shuffle"):
        ds.prune_(model, ds.ChannelPruning(ratio=0.5, measure_latency=False), example_inputs=(torch.randn(1, 3, 64, 64),))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
