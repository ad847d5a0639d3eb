"""`deepshrink analyze`: per-layer parameters, nonzeros, bytes, MACs and measured latency."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from .. import data as data_mod
from ..analysis import measure_latency, summarize
from ..cli import _handles_errors, app, print_json
from ..models import example_inputs
from .eval import resolve_model


@app.command("analyze")
@_handles_errors
def analyze_command(
    target: str = typer.Argument(..., metavar="MODEL_SPEC_OR_FILE", help="A model spec, a .dsz or a .safetensors file."),
    data: Optional[str] = typer.Option(None, "--data", help="Data spec that sizes the model and its example input."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights for a model spec."),
    latency: bool = typer.Option(True, "--latency/--no-latency", help="Measure CPU latency at batch 1."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Per-layer table of parameters, nonzeros, fp32 bytes and MACs, with measured latency.

    Example: deepshrink analyze lenet5 --data mnist5k --json
    """
    bundle = data_mod.load(data) if data else None
    model, size = resolve_model(target, bundle, weights)
    model.eval()
    inputs = example_inputs(model, bundle, batch_size=1)
    summary = summarize(model, inputs)
    result = summary.to_dict()
    result["size_bytes"] = size
    if latency:
        result["latency"] = measure_latency(model, inputs)
    if json_out:
        print_json(result)
        return
    console = Console()
    console.print(summary.table())
    if latency:
        console.print(f"latency at batch 1: median {result['latency']['median_ms']:.3f} ms")
