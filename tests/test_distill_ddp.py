"""Distillation with hints on two data-parallel processes trains the same student as one process."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import deepshrink as ds

CFG = ds.TrainConfig(epochs=2, batch_size=64, optimizer="sgd", lr=0.05, progress=False)
KD = ds.KD(temperature=4.0, alpha=0.7, hints=[("fc1", "fc1")])


def _student_and_teacher():
    data = ds.data.load("digits")
    torch.manual_seed(1)
    teacher = ds.models.create("lenet300", in_features=64, num_classes=10)
    torch.manual_seed(0)
    student = ds.models.create("mlp", in_features=64, hidden=[32], num_classes=10)
    return student, teacher, data


def _distill(out: str) -> None:
    student, teacher, data = _student_and_teacher()
    ds.distill(student, teacher, data, KD, CFG)
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, out)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _distill(os.path.join(out_dir, f"rank{rank}.safetensors"))
        dist.barrier()  # both ranks done before either tears the group down (gloo aborts otherwise)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_distill_the_same_student_as_one(tmp_path):
    _distill(str(tmp_path / "one.safetensors"))
    init_file = os.path.join(tempfile.mkdtemp(), "init")
    mp.spawn(_worker, args=(2, init_file, str(tmp_path)), nprocs=2, join=True)
    one = load_file(str(tmp_path / "one.safetensors"))
    for rank in (0, 1):
        two = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert one.keys() == two.keys()
        for k in one:
            assert torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-4), (rank, k, (one[k] - two[k]).abs().max())
