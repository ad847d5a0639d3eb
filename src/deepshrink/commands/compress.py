"""`deepshrink compress`: run a recipe on a model and write a .dsz file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .. import data as data_mod
from ..cli import _handles_errors, app
from ..recipe import load_recipe, run_recipe
from ..fileio import atomic_write_bytes
from .common import build_model


@app.command("compress")
@_handles_errors
def compress_command(
    model: str = typer.Option(..., "--model", help="Model spec, e.g. lenet5, torchvision:resnet18, minilm."),
    data: str = typer.Option(..., "--data", help="Data spec, e.g. mnist5k, text:pydoc."),
    recipe: str = typer.Option(..., "--recipe", help="A built-in recipe name (see recipes/) or a YAML file."),
    out: Path = typer.Option(..., "--out", help="Output compressed file (.dsz)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Trained weights (.safetensors or .pt state dict)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write the run's report as JSON here."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars while fine-tuning."),
) -> None:
    """Compress a model with a recipe and save it as .dsz.

    Example: deepshrink compress --model lenet5 --weights lenet5.safetensors --data mnist5k --recipe deep-compression --out lenet5.dsz
    """
    if out.suffix != ".dsz":
        raise ValueError(f"--out must end in .dsz, got {out}")
    plan = load_recipe(recipe)  # validate the recipe before any work
    bundle = data_mod.load(data)
    net = build_model(model, bundle, weights)
    from ..codec import save as save_dsz
    from ..models import example_inputs

    result = run_recipe(net, bundle, plan, example_inputs=example_inputs(net, bundle), train_overrides={"progress": progress})
    saved = save_dsz(net, out, meta={"recipe": plan.name, "data": data})
    payload = {"recipe": result.to_dict(), "file": str(out), "file_bytes": out.stat().st_size,
               "ratio_vs_fp32": saved.ratio, "fp32_bytes": saved.fp32_bytes, "bits_per_weight": saved.bits_per_weight,
               "tensors": saved.tensors}
    if report is not None:
        atomic_write_bytes(report, json.dumps(payload, indent=2, default=str).encode())
    typer.echo(f"wrote {out} ({out.stat().st_size:,} bytes)")
    typer.echo(str(saved))
