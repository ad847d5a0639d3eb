"""Sparse training from scratch on mnist5k, LeNet-300-100 at 20% density, against dense training.

Dense, sparse momentum, SET and RigL, 3 seeds each, all with the project's default LeNet-300-100
settings (benchmarks/tune_baselines.py chose them on the validation split; 150 epochs, SGD with
Nesterov momentum, lr 0.05, cosine, weight decay 5e-4, affine augmentation). The sparse methods use
their papers' defaults (drop fraction 0.5 with cosine decay, updates at the end of every epoch,
uniform initial density); nothing was tuned on the test split. Test accuracy on the 1,000 test digits.

Results go to benchmarks/results/sparse_momentum.json after every run; an interrupted benchmark
continues where it stopped. One thread per run (the machine is shared).

    python benchmarks/bench_sparse_momentum.py
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

import deepshrink as ds
from deepshrink.train.defaults import default_train_config
from _report import machine, write_section

RESULTS = Path(__file__).parent / "results" / "sparse_momentum.json"
DENSITY = 0.2
SEEDS = (0, 1, 2)
METHODS = {
    "dense": lambda: [],
    "sparse momentum": lambda: [ds.SparseMomentum(density=DENSITY)],
    "SET": lambda: [ds.SET(density=DENSITY)],
    "RigL": lambda: [ds.RigL(density=DENSITY)],
}


def run(method: str, seed: int, data: ds.data.DataBundle) -> dict:
    cfg = default_train_config("lenet300").replace(seed=seed, progress=False)
    torch.manual_seed(seed)
    model = ds.models.create("lenet300")
    callbacks = METHODS[method]()
    t = time.perf_counter()
    out = ds.train(model, data, cfg, callbacks)
    seconds = time.perf_counter() - t
    row = {"method": method, "seed": seed, "epochs": cfg.epochs, "seconds": round(seconds, 1),
           "val_accuracy": out["val"]["val_accuracy"], "test_accuracy": ds.evaluate(model, data.test)["accuracy"],
           "density": 1.0 - ds.prune.sparsity(model) if callbacks else 1.0}
    if callbacks:
        masks = ds.prune.masks(model)
        row["active_weights"] = sum(int(m.sum()) for m in masks.values())
        row["layer_density"] = {k: round(float(m.float().mean()), 4) for k, m in masks.items()}
    return row


def main() -> None:
    torch.set_num_threads(1)
    data = ds.data.load("mnist5k")
    RESULTS.parent.mkdir(exist_ok=True)
    rows = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    done = {(r["method"], r["seed"]) for r in rows}
    for seed in SEEDS:
        for method in METHODS:
            if (method, seed) in done:
                continue
            rows.append(run(method, seed, data))
            print(json.dumps(rows[-1]), flush=True)
            RESULTS.write_text(json.dumps({"machine": machine(), "density": DENSITY, "rows": rows}, indent=2))
    summary = {}
    for method in METHODS:
        accs = [r["test_accuracy"] for r in rows if r["method"] == method]
        vals = [r["val_accuracy"] for r in rows if r["method"] == method]
        secs = [r["seconds"] for r in rows if r["method"] == method]
        summary[method] = {"test_mean": statistics.mean(accs), "test_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                           "val_mean": statistics.mean(vals), "seconds_mean": statistics.mean(secs), "tests": accs}
    dense = summary["dense"]["test_mean"]
    for method in METHODS:
        summary[method]["gap_points"] = 100 * (summary[method]["test_mean"] - dense)
    RESULTS.write_text(json.dumps({"machine": machine(), "density": DENSITY, "rows": rows, "summary": summary}, indent=2))
    sm = next(r for r in rows if r["method"] == "sparse momentum" and r["seed"] == 0)
    lines = [
        "## Sparse training from scratch: sparse momentum, SET, RigL (`benchmarks/bench_sparse_momentum.py`)",
        "",
        f"Measured {machine()} (one thread per run, shared machine). mnist5k, LeNet-300-100,",
        f"{len(SEEDS)} seeds per method, every method with the default LeNet-300-100 settings (150 epochs, SGD",
        "Nesterov lr 0.05, cosine, weight decay 5e-4, affine augmentation). Sparse runs keep exactly",
        f"{100 * DENSITY:.0f}% of the weights ({sm['active_weights']:,} of {round(sm['active_weights'] / DENSITY):,}) from the first step to the last;",
        "drop fraction 0.5 with cosine decay, updated at the end of every epoch (papers' defaults, not tuned).",
        "Test accuracy on the 1,000 test digits; gap = method mean minus dense mean.",
        "",
        "| method | density | test accuracy (mean +- std) | gap (points) | val accuracy | seconds per run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method, s in summary.items():
        density = "100%" if method == "dense" else f"{100 * DENSITY:.0f}%"
        lines.append(f"| {method} | {density} | {100 * s['test_mean']:.2f} +- {100 * s['test_std']:.2f} | "
                     f"{s['gap_points']:+.2f} | {100 * s['val_mean']:.2f} | {s['seconds_mean']:.0f} |")
    lines += ["", "Final per-layer density of sparse momentum (seed 0): "
              + ", ".join(f"`{k}` {100 * v:.1f}%" for k, v in sm["layer_density"].items())
              + " (momentum redistribution moves weights to the smaller layers).",
              "Raw figures: `benchmarks/results/sparse_momentum.json`."]
    write_section("sparse-momentum", "\n".join(lines))


if __name__ == "__main__":
    main()
