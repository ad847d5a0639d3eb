"""Pruning schedules: reach their targets, masks only shrink, checkpoint/resume, engine and own loop."""

from __future__ import annotations

import torch
from torch import nn

import deepshrink as ds
from deepshrink.prune import GradualPruning, IterativePruning, OneShotPruning, masks, sparsity
from deepshrink.train.callbacks import TrainState


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 40), nn.ReLU(), nn.Linear(40, 4))


def _own_loop(model: nn.Module, cb: ds.Callback, epochs: int, steps_per_epoch: int = 4) -> list[dict[str, torch.Tensor]]:
    """A user's hand-written loop calling the hooks; returns the masks after every epoch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    state = TrainState(model=model, optimizer=opt, total_epochs=epochs, steps_per_epoch=steps_per_epoch)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 4, (32,))
    history = []
    cb.on_train_begin(state)
    for epoch in range(epochs):
        state.epoch = epoch
        cb.on_epoch_begin(state)
        for _ in range(steps_per_epoch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            cb.on_before_step(state)
            opt.step()
            state.step += 1
            cb.on_step_end(state)
        cb.on_epoch_end(state)
        history.append({k: v.clone() for k, v in masks(model).items()})
    cb.on_train_end(state)
    return history


def _shrinking(history: list[dict[str, torch.Tensor]]) -> bool:
    for before, after in zip(history, history[1:]):
        for k, m in after.items():
            if k in before and bool((m & ~before[k]).any()):
                return False
    return True


def test_iterative_reaches_target_and_masks_only_shrink() -> None:
    model = _model()
    cb = IterativePruning(ds.MagnitudePruning(sparsity=0.9), rounds=4, epochs_per_round=1)
    history = _own_loop(model, cb, epochs=5)
    n = [sum(int((~m).sum()) for m in h.values()) for h in history]
    total = sum(m.numel() for m in history[-1].values())
    assert n == sorted(n) and len(set(n[:4])) == 4  # grows every round
    assert abs(n[0] / total - (1 - 0.1 ** 0.25)) < 1e-3
    for layer in (model[1], model[3]):
        assert int((layer.weight == 0).sum()) == round(0.9 * layer.weight.numel())
    assert _shrinking(history)
    assert cb.state_dict() == {"rounds_done": 4}


def test_gradual_cubic_schedule_reaches_target() -> None:
    model = _model()
    cb = GradualPruning(ds.MagnitudePruning(sparsity=0.8, scope="global"), begin_step=0, end_step=12, frequency=3)
    history = _own_loop(model, cb, epochs=4, steps_per_epoch=4)
    assert _shrinking(history)
    assert abs(sparsity(model) - 0.8) < 1e-9
    assert abs(cb.sparsity_at(6) - 0.8 * (1 - 0.5 ** 3)) < 1e-12


def test_one_shot_and_checkpoint_resume() -> None:
    model = _model()
    cb = OneShotPruning(ds.MagnitudePruning(sparsity=0.5))
    _own_loop(model, cb, epochs=1)
    assert sparsity(model) == 0.5 and cb.state_dict() == {"done": True}
    # an iterative schedule resumed mid-way does not repeat rounds
    first = IterativePruning(ds.MagnitudePruning(sparsity=0.75), rounds=3)
    m2 = _model()
    state = TrainState(model=m2)
    for epoch in range(2):
        state.epoch = epoch
        first.on_epoch_begin(state)
    resumed = IterativePruning(ds.MagnitudePruning(sparsity=0.75), rounds=3)
    resumed.load_state_dict(first.state_dict())
    state.epoch = 2
    resumed.on_epoch_begin(state)
    assert len(resumed.reports) == 1 and abs(sparsity(m2) - 0.75) < 1e-3


def test_iterative_in_engine() -> None:
    data = ds.data.load("synthetic:classification:256")
    model = _model()
    cb = IterativePruning(ds.MagnitudePruning(sparsity=0.8), rounds=2, epochs_per_round=1)
    ds.train(model, data, ds.TrainConfig(epochs=3, batch_size=32, progress=False, optimizer="sgd", lr=0.05,
                                         weight_decay=1e-3), callbacks=[cb])
    for layer in (model[1], model[3]):
        assert int((layer.weight == 0).sum()) == round(0.8 * layer.weight.numel())
