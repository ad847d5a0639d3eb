"""Sparse training (sparse momentum, SET, RigL): exact constant density, regrowth from zero, resume, DDP agreement."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import deepshrink as ds
from crash import Crash, CrashAt
from deepshrink.prune.masks import apply_mask, get_mask, set_mask
from deepshrink.prune.sparse_training import allocate, initial_counts
from deepshrink.train.checkpoint import load_checkpoint


def _small(seed: int = 0):
    data = ds.data.load("digits")
    torch.manual_seed(seed)
    return ds.models.create("lenet300", in_features=64, num_classes=10), data


def _active(model) -> int:
    return sum(int(m.sum()) for m in ds.prune.masks(model).values())


class _Watch(ds.Callback):
    """After each sparse update (it runs first, at epoch end): counts, and what grew."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.grown_values: list[float] = []
        self.before: dict[str, torch.Tensor] = {}

    def on_epoch_begin(self, s):
        self.before = {k: v.clone() for k, v in ds.prune.masks(s.model).items()}

    def on_epoch_end(self, s):
        self.counts.append(_active(s.model))
        for key, mask in ds.prune.masks(s.model).items():
            qual, _, name = key.rpartition(".")
            weight = getattr(s.model.get_submodule(qual), name)
            grown = mask & ~self.before[key]
            self.grown_values += weight[grown].tolist()


@pytest.mark.parametrize("method", [ds.SparseMomentum, ds.SET, ds.RigL])
def test_density_is_exactly_constant_and_regrowth_starts_at_zero(method):
    model, data = _small()
    cb, watch = method(density=0.2), _Watch()
    out = ds.train(model, data, ds.TrainConfig(epochs=3, optimizer="sgd", lr=0.05, progress=False), [cb, watch])
    numel = sum(m.numel() for m in ds.prune.masks(model).values())
    expected = round(0.2 * numel)
    assert watch.counts == [expected] * 3
    assert _active(model) == expected
    assert len(cb.updates) == 2  # not after the last epoch
    assert all(u["moved"] > 0 for u in cb.updates)
    assert watch.grown_values and all(v == 0.0 for v in watch.grown_values)
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]  # it learns while its connections move


def test_momentum_redistribution_moves_density_between_layers():
    model, data = _small()
    cb = ds.SparseMomentum(density=0.2)
    ds.train(model, data, ds.TrainConfig(epochs=4, optimizer="sgd", lr=0.05, progress=False), [cb])
    densities = cb.updates[-1]["density"]
    assert len(set(round(v, 3) for v in densities.values())) > 1  # started uniform, now uneven
    set_cb = ds.SET(density=0.2)
    model2, _ = _small()
    ds.train(model2, data, ds.TrainConfig(epochs=3, optimizer="sgd", lr=0.05, progress=False), [set_cb])
    for layer, d in set_cb.updates[-1]["density"].items():
        assert abs(d - 0.2) < 1e-3, layer  # SET regrows in the layer that lost


def test_pruned_weights_stay_zero_between_updates_and_optimizer_state_is_reset():
    model, data = _small()
    cb = ds.SparseMomentum(density=0.1)
    ds.train(model, data, ds.TrainConfig(epochs=2, optimizer="sgd", lr=0.05, progress=False), [cb])
    for _, module, name, mask in ds.prune.iter_masks(model):
        assert torch.all(getattr(module, name)[~mask] == 0)
        assert torch.all(module.parametrizations[name].original[~mask] == 0)


def test_set_mask_regrows_but_apply_mask_only_shrinks():
    layer = torch.nn.Linear(3, 2)
    set_mask(layer, "weight", torch.tensor([[True, False, True], [False, True, False]]))
    set_mask(layer, "weight", torch.tensor([[False, True, True], [True, True, False]]))
    assert get_mask(layer).tolist() == [[False, True, True], [True, True, False]]
    assert layer.weight[0, 1] == 0 and layer.weight[1, 0] == 0  # regrown from zero
    apply_mask(layer, "weight", torch.tensor([[True, True, True], [True, False, True]]))
    assert get_mask(layer).tolist() == [[False, True, True], [True, False, False]]


def test_allocation_is_exact_and_capped():
    assert sum(allocate(1000, [3.0, 1.0, 0.5], [100, 5000, 5000])) == 1000
    assert allocate(1000, [3.0, 1.0, 0.5], [100, 5000, 5000])[0] == 100
    assert allocate(7, [0.0, 0.0], [3, 10]) == [2, 5]  # no signal: by free room
    assert sum(initial_counts([235200, 30000, 1000], 0.05, "erdos_renyi", [1 / 300 + 1 / 784, 1 / 100 + 1 / 300, 0.11])) \
        == round(0.05 * 266200)


def test_bad_settings_name_the_field():
    with pytest.raises(ds.ConfigError, match="density"):
        ds.SparseMomentum(density=1.5)
    with pytest.raises(ds.ConfigError, match="prune_ratio"):
        ds.SparseMomentum(density=0.2, prune_ratio=0.3)
    with pytest.raises(ds.ConfigError, match="regrowth"):
        ds.SparseMomentum(density=0.2, regrowth="best")


@pytest.mark.parametrize("method", [ds.SparseMomentum, ds.SET])
def test_crash_mid_run_then_resume_equals_uninterrupted(tmp_path, method):
    # 20 steps per epoch; updates at steps 20 and 40; the crash at step 30 resumes from step 28,
    # after the first update: masks, momentum and the update count come back from the checkpoint.
    cfg = ds.TrainConfig(epochs=3, optimizer="sgd", lr=0.05, progress=False, checkpoint_every_steps=7)
    full, data = _small()
    ref = method(density=0.2)
    ds.train(full, data, cfg.replace(checkpoint_dir=str(tmp_path / "full")), [ref])
    part, _ = _small()
    with pytest.raises(Crash):
        ds.train(part, data, cfg.replace(checkpoint_dir=str(tmp_path / "ck")), [method(density=0.2), CrashAt(30)])
    assert load_checkpoint(tmp_path / "ck")["step"] == 28
    fresh, _ = _small(seed=5)  # another init: everything must come from the checkpoint
    cb = method(density=0.2)
    ds.train(fresh, data, cfg.replace(checkpoint_dir=str(tmp_path / "ck"), resume=True), [cb, ds.Callback()])
    assert [u["moved"] for u in cb.updates] == [u["moved"] for u in ref.updates]
    for (k, a), (_, b) in zip(full.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, data = _small()
        cb = ds.SparseMomentum(density=0.2)
        cb.prepare(model)  # before DDP wraps the model
        ds.train(model, data, ds.TrainConfig(epochs=3, optimizer="sgd", lr=0.05, progress=False), [cb])
        state = {k: v.to(torch.uint8) for k, v in ds.prune.masks(model).items()}
        from safetensors.torch import save_file

        save_file(state, os.path.join(out_dir, f"rank{rank}.safetensors"))
        dist.barrier()  # both ranks done before either tears the group down (gloo aborts otherwise)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_choose_identical_masks(tmp_path):
    from safetensors.torch import load_file

    init_file = os.path.join(tempfile.mkdtemp(), "init")
    mp.spawn(_ddp_worker, args=(2, init_file, str(tmp_path)), nprocs=2, join=True)
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # every process chose the same masks
    numel = sum(v.numel() for v in a.values())
    assert sum(int(v.sum()) for v in a.values()) == round(0.2 * numel)
