"""`deepshrink train`: train a built-in model on built-in data, with checkpoints and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch
import typer

from .. import data as data_mod
from ..cli import _handles_errors, app
from ..train.config import AUGMENTATIONS, OPTIMIZERS, TrainConfig
from ..train.defaults import default_train_config
from ..train.engine import evaluate, train as run_training
from .common import build_model, save_weights


@app.command("train")
@_handles_errors
def train_command(
    model: str = typer.Option(..., "--model", help="Model spec, e.g. lenet300, lenet5, torchvision:resnet18."),
    data: str = typer.Option(..., "--data", help="Data spec, e.g. mnist5k, digits."),
    out: Path = typer.Option(..., "--out", help="Output weights file (.safetensors)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (default: the model's tuned default)."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, batches and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in the checkpoint dir."),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="Where checkpoints go (default: OUT.ckpt)."),
    checkpoint_every_steps: int = typer.Option(0, "--checkpoint-every-steps", help="Also checkpoint every N steps (0: each epoch)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the model's tuned default)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="One of: " + ", ".join(OPTIMIZERS)),
    augment: Optional[str] = typer.Option(None, "--augment", help="One of: " + ", ".join(AUGMENTATIONS)),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Train a model and write its weights.

    Example: deepshrink train --model lenet5 --data mnist5k --epochs 30 --out lenet5.safetensors

    Under torchrun (torchrun --standalone --nproc_per_node=2 -m deepshrink train ...) the same
    command trains data-parallel; the global batch size is kept.
    """
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {out}")
    bundle = data_mod.load(data)
    defaults = default_train_config(model)
    changes = {k: v for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, augment=augment).items() if v is not None}
    ckpt = checkpoint_dir or out.with_name(out.name + ".ckpt")
    cfg: TrainConfig = defaults.replace(
        seed=seed, resume=resume, checkpoint_dir=str(ckpt), checkpoint_every_steps=checkpoint_every_steps,
        progress=progress, **changes,
    )
    torch.manual_seed(seed)
    net = build_model(model, bundle)
    result = run_training(net, bundle, cfg)
    if result["rank"] == 0:  # under torchrun, one process writes the output
        test = evaluate(net, bundle.test)
        save_weights(net, out, extra={"train": cfg.to_dict()})
        shutil.rmtree(ckpt, ignore_errors=True)  # the run is complete; its checkpoints are spent
        summary = {"model": model, "data": data, "out": str(out), "epochs": cfg.epochs, "steps": result["steps"],
                   "seconds": round(result["seconds"], 2), "val_accuracy": result["val"].get("val_accuracy"),
                   "test_accuracy": test["accuracy"], "world_size": result["world_size"]}
        if json_out:
            print(json.dumps(summary))
        else:
            typer.echo(f"wrote {out}: test accuracy {test['accuracy']:.4f} after {cfg.epochs} epochs ({result['seconds']:.1f} s)")
