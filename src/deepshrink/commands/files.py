"""`deepshrink inspect` and `deepshrink export`: look inside and convert .dsz files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..cli import _handles_errors, app, existing_file, print_json


@app.command("inspect")
@_handles_errors
def inspect_command(
    file: Path = typer.Argument(..., help="A .dsz file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show what a .dsz file holds: per tensor codec, shape, bytes, bits per weight; totals.

    Example: deepshrink inspect lenet5.dsz --json
    """
    from ..codec import inspect as inspect_dsz

    info = inspect_dsz(existing_file(file, ".dsz file"))
    if json_out:
        print_json(info)
        return
    totals = info.get("totals", {})
    table = Table(title=f"{file} ({totals.get('file_bytes', 0):,} bytes, {totals.get('ratio_vs_fp32', 0):.1f}x smaller than fp32)")
    for col in ("tensor", "codec", "shape", "bytes", "bits/weight"):
        table.add_column(col, justify="right" if col in ("bytes", "bits/weight") else "left")
    for t in info.get("tensors", []):
        table.add_row(str(t.get("name")), str(t.get("codec")), str(tuple(t.get("shape", ()))), f"{t.get('bytes', 0):,}",
                      f"{t.get('bits_per_weight', 0):.2f}")
    Console().print(table)
    for key, value in info.items():
        if key not in ("tensors", "header"):
            typer.echo(f"{key}: {value}")


@app.command("export")
@_handles_errors
def export_command(
    file: Path = typer.Argument(..., help="A .dsz file."),
    to: str = typer.Option(..., "--to", help="safetensors or onnx"),
    out: Path = typer.Argument(..., help="Output file."),
) -> None:
    """Export a .dsz model as plain safetensors weights or an ONNX graph.

    Example: deepshrink export lenet5.dsz --to onnx lenet5.onnx
    """
    from ..codec import export_onnx, export_safetensors

    existing_file(file, ".dsz file")
    if to == "safetensors":
        export_safetensors(file, out)
    elif to == "onnx":
        export_onnx(file, out)
    else:
        raise ValueError(f"--to {to!r} is not supported; use safetensors or onnx")
    typer.echo(f"wrote {out}")
