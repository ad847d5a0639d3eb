"""Shared helper of bench_distill.py and bench_exits.py: the LeNet-5 teacher on mnist5k.

Trained with `deepshrink train`'s default LeNet-5 settings (chosen on the validation
split by tune_baselines.py) and seed 0; cached as safetensors under
$DEEPSHRINK_BENCH_CACHE (default: the system temp folder) so that both scripts use
the same network without training it twice.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import deepshrink as ds
from deepshrink.train.defaults import default_train_config


def lenet5_teacher(data: ds.data.DataBundle, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """The trained teacher and how it was made (settings, seconds, whether it came from the cache)."""
    cfg = default_train_config("lenet5").replace(seed=seed, progress=False)
    cache = Path(os.environ.get("DEEPSHRINK_BENCH_CACHE", tempfile.gettempdir())) / f"deepshrink-lenet5-mnist5k-seed{seed}-e{cfg.epochs}.safetensors"
    info = {"spec": "lenet5", "train": {k: v for k, v in cfg.to_dict().items() if k not in ("type", "version")}}
    if cache.is_file():
        model = ds.models.create("lenet5", weights=cache)
        info["cached"] = True
    else:
        torch.manual_seed(seed)
        model = ds.models.create("lenet5")
        t = time.perf_counter()
        ds.train(model, data, cfg)
        info["train_seconds"] = round(time.perf_counter() - t, 1)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        os.replace(tmp, cache)
        info["cached"] = False
    model.eval()
    info["val_accuracy"] = ds.evaluate(model, data.val)["accuracy"]
    info["test_accuracy"] = ds.evaluate(model, data.test)["accuracy"]
    return model, info
