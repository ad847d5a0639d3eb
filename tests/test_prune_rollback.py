"""Channel pruning never leaves a broken or half-pruned model: it checks itself, retries group by group, or rolls back.

Torch-Pruning's dependency graph mis-maps some couplings (a torch.split whose halves meet again, timm's
selective-kernel stack of branches, convolutions with an extra per-channel parameter). The verb checks the
pruned model against the original with the removed channels zeroed; on a failure it starts again from the
unpruned model and keeps whole every group whose removal breaks the model, and when nothing can be removed
(or anything else goes wrong) the caller's model is put back exactly as it was.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deepshrink as ds
import deepshrink.prune.structured as structured
from deepshrink.prune.verify import removal_equivalence
from deepshrink.surgery import surgery_log


class SplitJoin(nn.Module):
    """Half of the stem's channels go through a convolution after meeting the other half: a split Torch-Pruning mis-maps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.mix = nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).relu()
        p, q = torch.split(x, 8, dim=1)
        q = self.mix(q + p)
        return self.fc(self.out(torch.cat([p, q], 1)).mean((2, 3)))


class GainConv(nn.Conv2d):
    """A convolution with a per-output-channel gain that Torch-Pruning does not know to cut (as timm's ScaledStdConv2d)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1)
        self.gain = nn.Parameter(torch.rand(cout) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gain.view(1, -1, 1, 1)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


CFG = ds.ChannelPruning(ratio=0.5, importance="l1", measure_latency=False)


def test_a_mis_mapped_split_is_retried_group_by_group_and_the_result_is_exact(tmp_path) -> None:
    torch.manual_seed(0)
    model = SplitJoin().eval()
    x = torch.randn(2, 3, 8, 8)
    result = removal_equivalence(model, CFG, (x,))
    pruned, report = result["pruned"], result["report"]
    assert "careful_retry" in report.figures  # the one-pass pruning broke the model and was undone
    assert "mix" in report.skipped and "kept whole" in report.skipped["mix"]
    assert result["max_rel_diff"] < 1e-5  # what was removed is exactly what zeroing removes
    assert result["param_fraction"] < 0.95  # the groups that could go, went
    path = tmp_path / "split.dsz"
    ds.save(pruned, path)
    again = ds.load(path, model=SplitJoin())
    assert torch.equal(again(x), pruned(x))


def test_when_no_group_can_go_the_model_is_refused_and_left_exactly_as_it_was() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(GainConv(3, 8), nn.ReLU(), GainConv(8, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    layers = list(model.modules())
    state = _state(model)
    with pytest.raises(ds.UnsupportedModelError, match="could remove nothing"):
        ds.prune_(model, CFG, example_inputs=(torch.randn(2, 3, 8, 8),))
    assert _same(model, state)
    assert list(model.modules()) == layers and model[0].out_channels == 8 and not surgery_log(model)


def test_an_interrupt_half_way_puts_the_model_back(monkeypatch) -> None:
    torch.manual_seed(0)
    model = ds.models.create("resnet_small")
    model.train()
    conv = model.get_submodule(next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)))
    calls: list[int] = []
    handle = conv.register_forward_hook(lambda *a: calls.append(1))  # the caller's own hook
    state = _state(model)

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(structured, "_check_still_runs", interrupted)  # after every group has been cut
    with pytest.raises(KeyboardInterrupt):
        ds.prune_(model, CFG, example_inputs=ds.models.example_inputs(model))
    assert _same(model, state) and model.training
    assert conv in list(model.modules()) and conv.weight.shape[0] == conv.out_channels
    assert not surgery_log(model)
    calls.clear()
    model.eval()(*ds.models.example_inputs(model))
    assert calls == [1]  # the caller's hook still runs, the same function ...
    handle.remove()
    assert not conv._forward_hooks  # ... and its handle still removes it


def test_timm_families_the_graph_mis_maps_prune_exactly() -> None:
    pytest.importorskip("timm")
    # FasterNet's downsampling block is also called PatchMerging, but is a strided convolution: not refused.
    # LeViT caches its attention biases during tracing as autograd tensors, which cannot be deep-copied: the
    # verb copies the model before it traces it.
    for name, kwargs in (("skresnet18", {}), ("res2net50_14w_8s", {}), ("fasternet_t0", {}), ("levit_128s", {"img_size": 32})):
        torch.manual_seed(0)
        model = ds.models.create(f"timm:{name}", num_classes=10, **kwargs).eval()
        x = torch.randn(2, 3, 32, 32)
        result = removal_equivalence(model, ds.ChannelPruning(ratio=0.3, importance="l1", measure_latency=False), (x,))
        assert result["max_rel_diff"] < 1e-4, name
        assert result["param_fraction"] < 0.999, name
        assert result["pruned"](x).shape == (2, 10)


def test_a_model_the_graph_maps_well_is_pruned_in_one_pass() -> None:
    model = ds.models.create("resnet_small")
    report = ds.prune_(copy.deepcopy(model), CFG, example_inputs=ds.models.example_inputs(model))
    assert "careful_retry" not in report.figures and report.figures["param_ratio"] < 0.5


def test_layers_whose_statistics_span_channels_are_compared_by_shape_only() -> None:
    from deepshrink.prune.verify import zeroing_equals_removal

    class StdConv2d(nn.Conv2d):  # named like timm's weight-standardised convolution
        pass

    assert zeroing_equals_removal(nn.Conv2d(2, 2, 1)) and zeroing_equals_removal(nn.BatchNorm2d(2))
    assert zeroing_equals_removal(nn.Linear(2, 2))
    for m in (nn.LayerNorm(2), nn.GroupNorm(1, 2), nn.Embedding(3, 2), StdConv2d(2, 2, 1)):
        assert not zeroing_equals_removal(m), type(m).__name__


def test_a_dependency_graph_that_does_not_finish_is_stopped_and_the_model_left_clean(monkeypatch) -> None:
    import time

    model = ds.models.create("resnet_small")
    state = _state(model)

    def endless(model: nn.Module, *_: object) -> None:
        model.register_forward_hook(lambda *a: None)  # a tracer's hook, left behind when it is stopped
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(structured, "_meta_pruner", endless)
    start = time.perf_counter()
    with pytest.raises(ds.UnsupportedModelError, match="did not finish within 1 s"):
        ds.prune_(model, ds.ChannelPruning(ratio=0.5, measure_latency=False, trace_seconds=1.0),
                  example_inputs=ds.models.example_inputs(model))
    assert time.perf_counter() - start < 10
    assert _same(model, state) and not model._forward_hooks


def test_rexnet_whose_graph_grows_without_end_is_refused_in_time() -> None:
    pytest.importorskip("timm")
    model = ds.models.create("timm:rexnet_100", num_classes=10).eval()
    state = _state(model)
    with pytest.raises(ds.UnsupportedModelError, match="trace_seconds"):
        ds.prune_(model, ds.ChannelPruning(ratio=0.3, measure_latency=False, trace_seconds=3.0),
                  example_inputs=(torch.randn(1, 3, 32, 32),))
    assert _same(model, state)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_a_model_where_every_group_is_kept_warns_and_says_why() -> None:
    from deepshrink.prune.structured import NothingPrunedWarning

    # Every channel group passes through a GroupNorm, which the replay cannot slice (as in BiT's ResNetV2).
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.GroupNorm(2, 8),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    state = _state(model)
    with pytest.warns(NothingPrunedWarning, match="GroupNorm cannot be sliced"):
        report = ds.prune_(model, CFG, example_inputs=(torch.randn(1, 3, 8, 8),))
    assert report.figures["param_ratio"] == 1.0 and _same(model, state)
