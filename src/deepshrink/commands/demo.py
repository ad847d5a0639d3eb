"""`deepshrink demo`: the headline Deep Compression demo on built-in data."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli import _handles_errors, app


@app.command("demo")
@_handles_errors
def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Directory for baselines, .dsz files and report.json."),
    quick: bool = typer.Option(False, "--quick", help="A short run (under a minute) for tests."),
) -> None:
    """Deep Compression of LeNet-300-100 and LeNet-5 on mnist5k, with the paper's figures beside ours.

    Example: deepshrink demo --out demo-out
    """
    from ..demo import run_demo

    run_demo(out, quick=quick)
    typer.echo(f"report: {out / 'report.json'}")
