"""Training engine: determinism, callbacks, checkpoint/resume after SIGKILL, 2-process equality."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from safetensors.torch import load_file

import deepshrink as ds
from crash import Crash, CrashAt
from deepshrink.train.checkpoint import load_checkpoint, save_checkpoint
from deepshrink.errors import FormatError

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _small():
    data = ds.data.load("digits")
    torch.manual_seed(0)
    model = ds.models.create("lenet300", in_features=64, num_classes=10)
    return model, data


def test_training_learns_and_is_deterministic():
    cfg = ds.TrainConfig(epochs=5, lr=0.05, optimizer="sgd", progress=False)
    m1, data = _small()
    out = ds.train(m1, data, cfg)
    m2, _ = _small()
    ds.train(m2, data, cfg)
    assert out["val"]["val_accuracy"] > 0.85
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


class _Recorder(ds.Callback):
    def __init__(self):
        self.events = []
        self.steps = 0

    def on_train_begin(self, s):
        self.events.append("train_begin")

    def on_epoch_begin(self, s):
        self.events.append(f"epoch_begin{s.epoch}")

    def on_before_step(self, s):
        assert all(p.grad is not None for p in s.model.parameters())

    def on_step_end(self, s):
        self.steps += 1

    def on_epoch_end(self, s):
        self.events.append(f"epoch_end{s.epoch}")

    def on_train_end(self, s):
        self.events.append("train_end")

    def state_dict(self):
        return {"steps": self.steps, "t": torch.tensor([self.steps])}

    def load_state_dict(self, state):
        self.steps = state["steps"]
        assert int(state["t"][0]) == self.steps


def test_callbacks_are_called_in_order():
    model, data = _small()
    cb = _Recorder()
    out = ds.train(model, data, ds.TrainConfig(epochs=2, progress=False), [cb])
    assert cb.events == ["train_begin", "epoch_begin0", "epoch_end1", "epoch_begin1", "epoch_end2", "train_end"]
    assert cb.steps == out["steps"] == 2 * 20  # 1258 training digits, batches of 64


def test_loss_term_from_callback_changes_training():
    class L1(ds.Callback):
        def loss_term(self, s):
            return 0.05 * sum(p.abs().sum() for p in s.model.parameters())

    plain, data = _small()
    cfg = ds.TrainConfig(epochs=1, optimizer="sgd", lr=0.05, momentum=0.0, progress=False)
    ds.train(plain, data, cfg)
    sparse, _ = _small()
    ds.train(sparse, data, cfg, [L1()])
    assert sparse.fc1.weight.abs().sum() < 0.8 * plain.fc1.weight.abs().sum()


def test_in_process_resume_equals_uninterrupted(tmp_path):
    cfg = ds.TrainConfig(epochs=3, progress=False, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every_steps=7)
    full, data = _small()
    cb_full = _Recorder()
    ds.train(full, data, cfg.replace(checkpoint_dir=str(tmp_path / "full")), [cb_full])
    # Interrupted mid-epoch at step 30 (a checkpoint was written at step 28), then resumed
    # in a fresh model with fresh callbacks.
    part, _ = _small()
    with pytest.raises(Crash):
        ds.train(part, data, cfg.replace(checkpoint_dir=str(tmp_path / "ck2")), [_Recorder(), CrashAt(30)])
    assert load_checkpoint(tmp_path / "ck2")["step"] == 28
    resumed, _ = _small()
    cb = _Recorder()
    ds.train(resumed, data, cfg.replace(checkpoint_dir=str(tmp_path / "ck2"), resume=True), [cb, ds.Callback()])
    assert cb.steps == cb_full.steps
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoint_is_checked(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(3)})
    blob = next(tmp_path.glob("*.safetensors"))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="checksum"):
        load_checkpoint(tmp_path)


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [str(BIN / "deepshrink"), "train", "--model", "lenet300", "--data", "digits", "--epochs", "25",
            "--out", str(out), "--no-progress", "--seed", "0", "--checkpoint-every-steps", "13", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    ref = tmp_path / "ref.safetensors"
    subprocess.run(_train_cmd(ref), check=True, env=ENV, capture_output=True)

    out = tmp_path / "run.safetensors"
    ckpt = Path(str(out) + ".ckpt")
    proc = subprocess.Popen(_train_cmd(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline:
        pointer = ckpt / "latest.json"
        if pointer.exists():
            try:
                step = json.loads(pointer.read_text())["step"]
            except (ValueError, OSError):
                step = 0
            if step >= 100:
                proc.send_signal(signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.005)
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists()  # no output from a killed run

    subprocess.run(_train_cmd(out, "--resume"), check=True, env=ENV, capture_output=True)
    a, b = load_file(str(ref)), load_file(str(out))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    one = tmp_path / "one.safetensors"
    two = tmp_path / "two.safetensors"
    common = ["--model", "lenet300", "--data", "digits", "--epochs", "2", "--batch-size", "64", "--no-progress"]
    subprocess.run([str(BIN / "deepshrink"), "train", *common, "--out", str(one)], check=True, env=ENV, capture_output=True)
    res = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "deepshrink", "train", *common, "--out", str(two), "--json"],
        env=ENV, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["world_size"] == 2
    a, b = load_file(str(one)), load_file(str(two))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())


def test_resume_of_a_pruned_run_into_a_fresh_model(tmp_path):
    cfg = ds.TrainConfig(epochs=2, progress=False, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every_steps=7)

    full, data = _small()
    ds.prune_(full, ds.MagnitudePruning(sparsity=0.8))
    ds.train(full, data, cfg.replace(checkpoint_dir=str(tmp_path / "full")), [ds.Callback()])
    part, _ = _small()
    ds.prune_(part, ds.MagnitudePruning(sparsity=0.8))
    with pytest.raises(Crash):
        ds.train(part, data, cfg, [CrashAt(25)])
    fresh, _ = _small()  # not pruned: the checkpoint brings the masks
    ds.train(fresh, data, cfg.replace(resume=True), [ds.Callback()])
    assert ds.prune.sparsity(fresh) == ds.prune.sparsity(full) > 0.5
    for (k, a), (_, b) in zip(full.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k


def test_dropout_override_turns_dropout_off_for_the_run_only_and_restores_it():
    torch.manual_seed(0)
    data = ds.data.load("synthetic:classification:64")
    seen: list[float] = []

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 4)
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.drop(x.flatten(1))
            if self.training:  # training steps only (the engine checks the data once in eval mode first)
                seen.append(float((h == 0).float().mean()))
            return self.fc(h)

    model = Net()
    ds.train(model, data, ds.TrainConfig(epochs=1, batch_size=16, dropout=0.0, progress=False, eval_every_epoch=False))
    assert seen and max(seen) < 0.01  # nothing dropped during the run (random inputs are never exactly 0)
    assert model.drop.p == 0.5  # the model's own setting is back
    seen.clear()
    ds.train(model, data, ds.TrainConfig(epochs=1, batch_size=16, progress=False, eval_every_epoch=False))
    assert min(seen) > 0.3  # unchanged without the override


def test_dropout_override_is_validated():
    with pytest.raises(ds.ConfigError, match="dropout"):
        ds.TrainConfig(dropout=1.0)
