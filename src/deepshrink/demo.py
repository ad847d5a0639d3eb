"""The headline demo: Deep Compression of LeNet-300-100 and LeNet-5 on mnist5k.

For each model: train the baseline (or reuse a cached one), run the model's
Deep Compression recipe (iterative pruning with retraining, k-means weight
sharing with centroid fine-tuning), save a .dsz, load it back as an ordinary
module, and evaluate the reloaded model on the test split. The result is a
table beside the paper's figures and ``DIR/report.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from . import data as data_mod
from .commands.common import build_model, load_weights_into, save_weights
from .fileio import atomic_write_bytes
from .train.defaults import default_train_config
from .train.engine import evaluate, train


@dataclass(frozen=True)
class PaperRow:
    name: str
    spec: str
    recipe: str
    paper_original_kb: int
    paper_compressed_kb: int
    paper_ratio: int
    paper_error_before: float
    paper_error_after: float


PAPER = (
    PaperRow("LeNet-300-100", "lenet300", "deep-compression-lenet300", 1070, 27, 40, 1.64, 1.58),
    PaperRow("LeNet-5", "lenet5", "deep-compression-lenet5", 1720, 44, 39, 0.80, 0.74),
)


def _baseline(row: PaperRow, bundle: Any, out_dir: Path, quick: bool, console: Console) -> torch.nn.Module:
    cache = out_dir / "baselines" / f"{row.spec}{'-quick' if quick else ''}.safetensors"
    torch.manual_seed(0)
    model = build_model(row.spec, bundle)
    if cache.is_file():
        load_weights_into(model, cache)
        console.print(f"{row.name}: reusing the baseline in {cache}")
        return model
    cfg = default_train_config(row.spec).replace(progress=not quick)
    if quick:
        cfg = cfg.replace(epochs=2)
    console.print(f"{row.name}: training the baseline ({cfg.epochs} epochs)")
    train(model, bundle, cfg)
    save_weights(model, cache)
    return model


def run_demo(out_dir: str | Path = "demo-out", quick: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Run the demo; returns the report that is also written to ``out_dir/report.json``.

    Example:
        >>> report = run_demo("/tmp/ds-demo", quick=True)  # doctest: +SKIP
        >>> sorted(report["models"][0])  # doctest: +SKIP
        ['compressed_bytes', 'name', 'original_bytes', 'ratio', 'seconds', 'test_accuracy_after', 'test_accuracy_before']
    """
    from .codec import load as load_dsz
    from .codec import save as save_dsz
    from .recipe import load_recipe, run_recipe

    console = console or Console(width=max(150, Console().width))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = data_mod.load("mnist5k")
    rows = []
    for paper in PAPER:
        started = time.perf_counter()
        model = _baseline(paper, bundle, out_dir, quick, console)
        before = evaluate(model, bundle.test)["accuracy"]
        original_bytes = sum(p.numel() * 4 for p in model.parameters())
        recipe = load_recipe(paper.recipe)
        overrides: dict[str, Any] = {"progress": False} if quick else {}
        if quick:
            overrides["max_steps"] = 10
        console.print(f"{paper.name}: compressing with recipe {paper.recipe}")
        run_recipe(model, bundle, recipe, train_overrides=overrides)
        path = out_dir / f"{paper.spec}.dsz"
        save_dsz(model, path, meta={"recipe": paper.recipe, "data": "mnist5k"})
        reloaded = load_dsz(path)
        after = evaluate(reloaded, bundle.test)["accuracy"]
        compressed = path.stat().st_size
        rows.append({
            "name": paper.name,
            "original_bytes": original_bytes,
            "compressed_bytes": compressed,
            "ratio": original_bytes / compressed,
            "test_accuracy_before": before,
            "test_accuracy_after": after,
            "seconds": time.perf_counter() - started,
        })
    report = {"models": rows, "data": "mnist5k", "quick": quick}
    atomic_write_bytes(out_dir / "report.json", json.dumps(report, indent=2).encode())
    console.print(render_table(rows))
    return report


def render_table(rows: list[dict[str, Any]]) -> Table:
    """The demo's table: ours beside the paper's Table 1.

    Example:
        >>> render_table([]).title
        'Deep Compression on mnist5k (paper: Han et al. 2016, Table 1, full MNIST)'
    """
    table = Table(title="Deep Compression on mnist5k (paper: Han et al. 2016, Table 1, full MNIST)",
                  caption="acc: test accuracy of the baseline and of the model reloaded from the .dsz file")
    for col in ("network", "KB", "dsz KB", "ratio", "acc", "acc (reloaded)", "paper KB", "paper ratio", "paper error", "s"):
        table.add_column(col, justify="left" if col == "network" else "right", no_wrap=True)
    papers = {p.name: p for p in PAPER}
    for r in rows:
        p = papers.get(r["name"])
        table.add_row(
            r["name"], f"{r['original_bytes'] / 1000:.1f}", f"{r['compressed_bytes'] / 1000:.1f}", f"{r['ratio']:.1f}x",
            f"{100 * r['test_accuracy_before']:.2f}%", f"{100 * r['test_accuracy_after']:.2f}%",
            f"{p.paper_original_kb}->{p.paper_compressed_kb}" if p else "-", f"{p.paper_ratio}x" if p else "-",
            f"{p.paper_error_before:.2f}->{p.paper_error_after:.2f}%" if p else "-", f"{r['seconds']:.0f}",
        )
    return table
