"""Lottery tickets: exact rewinding, masks that only shrink, the resumable experiment and its command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import deepshrink as ds
from crash import Crash, CrashAt
from deepshrink.prune.lottery import LotteryConfig, RewindPoint, prune_round, rewind_, run_lottery, weights_of
from deepshrink.train.checkpoint import load_checkpoint

BIN = Path(sys.executable).parent
FULL = ds.TrainConfig(epochs=1, optimizer="sgd", lr=0.05, progress=False)
FAST = FULL.replace(max_steps=6)  # a few steps: the tests check bookkeeping, not accuracy


def _small(seed: int = 0):
    torch.manual_seed(seed)
    return ds.models.create("lenet300", in_features=64, num_classes=10)


def test_rewinding_restores_exactly_the_saved_weights():
    data = ds.data.load("digits")
    model = _small()
    point = RewindPoint(5)
    ds.train(model, data, FULL.replace(epochs=2), [point])
    snap = point.snapshot
    assert snap is not None and not torch.equal(snap["fc1.weight"], weights_of(model)["fc1.weight"])
    prune_round(model, LotteryConfig(rate=0.3), 2)
    rewind_(model, snap)
    for key, value in snap.items():
        qual, _, name = key.rpartition(".")
        current = getattr(model.get_submodule(qual), name)
        mask = ds.prune.get_mask(model.get_submodule(qual), name)
        if mask is None:
            assert torch.equal(current, value), key
        else:
            assert torch.equal(current[mask], value[mask]), key
            assert torch.all(current[~mask] == 0), key
    with pytest.raises(ValueError, match="snapshot"):
        rewind_(model, {k: v for k, v in snap.items() if k != "fc2.bias"})


def test_masks_only_shrink_from_round_to_round_at_exact_levels():
    data = ds.data.load("digits")
    model = _small()
    cfg = LotteryConfig(rate=0.2, per_layer={"fc3": 0.1})
    previous = None
    for r in range(1, 5):
        ds.train(model, data, FAST)  # weights move between rounds, as in the experiment
        prune_round(model, cfg, r)
        current = {k: v.clone() for k, v in ds.prune.masks(model).items()}
        for key, mask in current.items():
            rate = 0.1 if key.startswith("fc3") else 0.2
            assert int(mask.sum()) == mask.numel() - round((1 - (1 - rate) ** r) * mask.numel()), (key, r)
            if previous is not None:
                assert not torch.any(mask & ~previous[key]), key  # nothing revived
        previous = current


def test_rewind_point_survives_a_crash_and_resume(tmp_path):
    data = ds.data.load("digits")

    cfg = FULL.replace(epochs=2, checkpoint_every_steps=7)
    ref = RewindPoint(25)
    ds.train(_small(), data, cfg.replace(checkpoint_dir=str(tmp_path / "a")), [ref])
    with pytest.raises(Crash):
        ds.train(_small(), data, cfg.replace(checkpoint_dir=str(tmp_path / "b")), [RewindPoint(25), CrashAt(30)])
    assert load_checkpoint(tmp_path / "b")["step"] == 28
    resumed = RewindPoint(25)
    ds.train(_small(seed=3), data, cfg.replace(checkpoint_dir=str(tmp_path / "b"), resume=True), [resumed, ds.Callback()])
    assert resumed.snapshot.keys() == ref.snapshot.keys()
    for k in ref.snapshot:
        assert torch.equal(resumed.snapshot[k], ref.snapshot[k]), k


def test_experiment_resumes_after_an_interruption(tmp_path):
    data = ds.data.load("digits")
    cfg = LotteryConfig(rounds=2, rate=0.5, control=False)
    full = run_lottery(lambda: _small(), data, cfg, FAST, tmp_path / "full")

    class Stop(Exception):
        pass

    def stop_after_first(row):
        if row["round"] == 0:
            raise Stop

    with pytest.raises(Stop):
        run_lottery(lambda: _small(), data, cfg, FAST, tmp_path / "part", on_round=stop_after_first)
    assert len(json.loads((tmp_path / "part" / "lottery.json").read_text())["rounds"]) == 1
    again = run_lottery(lambda: _small(), data, cfg, FAST, tmp_path / "part")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("ticket", "control")} | {  # noqa: E731
        "acc": r["ticket"]["test_accuracy"], "ctrl": r.get("control", {}).get("test_accuracy")} for r in rows]
    assert strip(again["rounds"]) == strip(full["rounds"])
    assert [round(r["density"], 4) for r in full["rounds"]] == [1.0, 0.5, 0.25]
    with pytest.raises(ds.ConfigError, match="other settings"):
        run_lottery(lambda: _small(), data, cfg.replace(rate=0.3), FAST, tmp_path / "part")


def test_lottery_command_writes_json_and_png(tmp_path):
    out = tmp_path / "lt"
    res = subprocess.run([str(BIN / "deepshrink"), "lottery", "--model", "lenet300", "--data", "digits", "--rounds", "1",
                          "--rate", "0.5", "--layer-rate", "fc3=0.25", "--epochs", "1", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((out / "lottery.json").read_text())
    assert [r["round"] for r in result["rounds"]] == [0, 1]
    assert "control" in result["rounds"][1]
    assert (out / "lottery.png").read_bytes()[:4] == b"\x89PNG"
    assert "round  1" in res.stderr
    bad = subprocess.run([str(BIN / "deepshrink"), "lottery", "--model", "lenet300", "--data", "digits", "--layer-rate", "fc3",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "PATTERN=RATE" in bad.stderr
