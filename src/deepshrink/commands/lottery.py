"""`deepshrink lottery`: the lottery-ticket experiment (iterative pruning with rewinding) and its plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.console import Console

from .. import data as data_mod
from ..cli import _handles_errors, app
from ..errors import ConfigError
from ..prune.lottery import PLOT_FILE, RESULT_FILE, LotteryConfig, run_lottery
from ..train.defaults import default_train_config
from .common import build_model


def _layer_rates(items: list[str]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for item in items:
        pattern, sep, value = item.partition("=")
        try:
            rates[pattern] = float(value)
        except ValueError:
            sep = ""
        if not sep or not pattern:
            raise ConfigError("--layer-rate", item, "PATTERN=RATE, e.g. fc3=0.1")
    return rates


@app.command("lottery")
@_handles_errors
def lottery_command(
    model: str = typer.Option(..., "--model", help="Model spec, e.g. lenet300."),
    data: str = typer.Option(..., "--data", help="Data spec, e.g. mnist5k."),
    out: Path = typer.Option(..., "--out", help="Output directory: lottery.json, lottery.png and resumable state."),
    rounds: int = typer.Option(12, "--rounds", help="Pruning rounds after the dense run (0.8**12 = 6.9% of weights)."),
    rate: float = typer.Option(0.2, "--rate", help="Fraction of the surviving weights pruned per round."),
    layer_rate: list[str] = typer.Option([], "--layer-rate", help="PATTERN=RATE for layers with their own rate (e.g. fc3=0.1)."),
    scope: str = typer.Option("layer", "--scope", help="layer (each layer loses RATE) or global (one threshold)."),
    rewind_iteration: int = typer.Option(0, "--rewind-iteration", help="Rewind to the weights after K steps (0: initial)."),
    control: bool = typer.Option(True, "--control/--no-control", help="Also train each mask from a random re-initialisation."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per round (default: the model's tuned default)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the model's tuned default)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation and the batches."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar per training run."),
) -> None:
    """Find winning tickets: train, prune RATE of the survivors, rewind, repeat; with the random re-init control.

    Example: deepshrink lottery --model lenet300 --data mnist5k --rounds 12 --rate 0.2 --layer-rate fc3=0.1 --out runs/lt

    Run the same command again to resume an interrupted experiment. Under torchrun every
    training run is data-parallel.
    """
    cfg = LotteryConfig(rounds=rounds, rate=rate, scope=scope, per_layer=_layer_rates(layer_rate),
                        rewind_iteration=rewind_iteration, control=control, seed=seed)
    bundle = data_mod.load(data)
    changes = {k: v for k, v in {"epochs": epochs, "lr": lr}.items() if v is not None}
    train_cfg = default_train_config(model).replace(seed=seed, progress=progress, **changes)
    console = Console(stderr=True)

    def report(row: dict) -> None:  # type: ignore[type-arg]
        text = f"round {row['round']:>2}: {100 * row['density']:6.2f}% of weights, ticket {100 * row['ticket']['test_accuracy']:.2f}%"
        if "control" in row:
            text += f", random re-init {100 * row['control']['test_accuracy']:.2f}%"
        console.print(text, highlight=False)

    result = run_lottery(lambda: build_model(model, bundle), bundle, cfg, train_cfg, out, on_round=report)
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    typer.echo(json.dumps({"out": str(out / RESULT_FILE), "plot": str(out / PLOT_FILE), "rounds": len(result["rounds"])}))
