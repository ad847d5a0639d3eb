"""Iterative structured pruning through engine callbacks, exact resume, and the latency figures of a pruning report."""

from __future__ import annotations

import warnings

import pytest
import torch

import deepshrink as ds
from crash import Crash, CrashAt
from deepshrink.prune.cost import MacsWithoutTimeWarning, check_step
from deepshrink.prune.structured_schedule import IterativeChannelPruning
from deepshrink.surgery import surgery_log


def _setup():
    data = ds.data.load("digits")
    torch.manual_seed(0)
    model = ds.models.create("vgg_small", image_size=8)
    return model, data, (torch.zeros(1, 1, 8, 8),)


def _schedule(x):
    return IterativeChannelPruning(ds.ChannelPruning(ratio=0.75, measure_latency=False), rounds=2, epochs_per_round=1,
                                   example_inputs=x)


def test_rounds_prune_then_train_and_reach_the_target():
    model, data, x = _setup()
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    cb = _schedule(x)
    out = ds.train(model, data, ds.TrainConfig(epochs=3, optimizer="sgd", lr=0.05, progress=False), [cb])
    assert cb.rounds_done == 2 and len(cb.reports) == 2
    got = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert got == [w // 4 for w in widths]  # 75% removed in two geometric rounds: w -> w/2 -> w/4
    # It kept training after each round (the optimizer follows the new parameters).
    assert out["history"][-1]["val_accuracy"] > 0.5


def test_interrupted_iterative_pruning_resumes_exactly(tmp_path):
    cfg = ds.TrainConfig(epochs=3, optimizer="sgd", lr=0.05, progress=False, checkpoint_every_steps=5)
    full, data, x = _setup()
    ds.train(full, data, cfg.replace(checkpoint_dir=str(tmp_path / "full")), [_schedule(x)])
    part, _, _ = _setup()
    # Crash in the second epoch, after the second round pruned the model further.
    with pytest.raises(Crash):
        ds.train(part, data, cfg.replace(checkpoint_dir=str(tmp_path / "ck")), [_schedule(x), CrashAt(31)])
    fresh, _, _ = _setup()  # unpruned: the checkpoint's surgery log rebuilds the architecture
    ds.train(fresh, data, cfg.replace(checkpoint_dir=str(tmp_path / "ck"), resume=True), [_schedule(x), ds.Callback()])
    assert surgery_log(fresh) == surgery_log(full)
    for (k, a), (_, b) in zip(full.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k


def test_report_has_latency_and_macs_before_and_after():
    model = ds.models.create("vgg_small")
    r = ds.prune_(model, ds.ChannelPruning(ratio=0.5), example_inputs=(torch.zeros(1, 1, 28, 28),))
    f = r.figures
    assert f["macs_after"] < 0.5 * f["macs_before"]
    assert f["latency_ms_before"] > 0 and f["latency_ms_after"] > 0 and f["speedup"] > 0
    assert len(f["steps"]) == 2
    quiet = ds.prune_(ds.models.create("vgg_small"), ds.ChannelPruning(ratio=0.5, measure_latency=False),
                      example_inputs=(torch.zeros(1, 1, 28, 28),))
    assert "latency_ms_before" not in quiet.figures


def test_macs_without_time_warning_rule():
    assert check_step({"macs": 100, "latency_ms": 1.0}, {"macs": 50, "latency_ms": 0.9}, 1)  # 50% MACs, 10% time
    assert check_step({"macs": 100, "latency_ms": 1.0}, {"macs": 50, "latency_ms": 0.7}, 1) is None  # 30% >= half of 50%
    assert check_step({"macs": 100, "latency_ms": 1.0}, {"macs": 95, "latency_ms": 1.0}, 1) is None  # too small to judge
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from deepshrink.prune.cost import warn_step

        warn_step({"macs": 100, "latency_ms": 1.0}, {"macs": 10, "latency_ms": 1.0}, 3)
    assert caught and issubclass(caught[0].category, MacsWithoutTimeWarning) and "round_to" in str(caught[0].message)


def test_bad_schedule_arguments_name_the_problem():
    with pytest.raises(ds.ConfigError, match="rounds"):
        IterativeChannelPruning(ds.ChannelPruning(), rounds=0, example_inputs=torch.zeros(1))
    with pytest.raises(ds.ConfigError, match="example_inputs"):
        IterativeChannelPruning(ds.ChannelPruning())
    with pytest.raises(ds.ConfigError, match="ChannelPruning"):
        IterativeChannelPruning(ds.MagnitudePruning(sparsity=0.5), example_inputs=torch.zeros(1))
