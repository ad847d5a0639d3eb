"""Depth pruning over every torchvision classifier: which blocks BlockPruning finds, and an exact rebuild after removal.

For each model of ``torchvision.models.list_models(module=torchvision.models)``
(random init, 10 classes, batch-norm statistics randomised, as in
``bench_structured_zoo.py``): find the removable blocks, remove a quarter of them
(``BlockPruning(ratio=0.25, importance="influence")``: one pass over the example
inputs; the default loss search measures every removal and takes minutes on the
large models), save the model as .dsz, load it back from its factory spec and
require the loaded model's outputs to equal the pruned model's exactly. Records
the blocks found, the share of parameters and MACs kept. Writes
``benchmarks/results/structured/block_zoo.json`` and the section ``block-zoo`` of
BENCHMARKS.md. Resumable; each model runs in a child process with a time and
memory limit. Not run by CI.

Run: .venv/bin/python benchmarks/bench_block_zoo.py [NAME ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torchvision

import deepshrink as ds
from deepshrink.analysis.macs import total_macs
from deepshrink.prune.blocks import find_blocks

from _report import ROOT, machine, write_section
from bench_structured_zoo import run_zoo, zoo_model

OUT = ROOT / "benchmarks" / "results" / "structured" / "block_zoo.json"


def check(name: str) -> dict:
    t0 = time.perf_counter()
    model, x, row = zoo_model(name)
    model.eval()
    try:
        blocks = find_blocks(model, (x,))
        row["blocks"] = len(blocks)
        row["kinds"] = sorted({type(model.get_submodule(b.name)).__name__ for b in blocks})
        if not blocks:
            row.update(ok=None, why="no removable blocks (no repeated block keeps its input's shape)")
        else:
            macs = total_macs(model, (x,))
            report = ds.prune_(model, ds.BlockPruning(ratio=0.25, importance="influence", measure_latency=False), example_inputs=(x,))
            with tempfile.TemporaryDirectory() as tmp:
                ds.save(model, Path(tmp) / "m.dsz")
                loaded = ds.load(Path(tmp) / "m.dsz").eval()
            same = torch.equal(loaded(x), model(x))
            row.update(ok=same, removed=report.changed, search=report.figures.get("search"),
                       param_fraction=report.figures["params_after"] / row["params"],
                       mac_fraction=total_macs(model, (x,)) / max(macs, 1))
            if not same:
                row["why"] = "the loaded model's outputs differ from the pruned model's"
    except Exception as exc:  # noqa: BLE001 -- a benchmark records every failure and goes on
        row.update(ok=False, why=f"{type(exc).__name__}: {(str(exc).splitlines() or ['(no message)'])[0][:200]}",
                   trace=traceback.format_exc()[-2000:])
    row["seconds"] = time.perf_counter() - t0
    return row


def main(names: list[str]) -> None:
    rows = run_zoo(names, OUT, check, lambda row: f"blocks={row.get('blocks', '-')}")
    ok = [r for r in rows if r["ok"]]
    none = [r for r in rows if r["ok"] is None and "blocks" in r]
    failed = [r for r in rows if r["ok"] is False]
    lines = [
        "## Depth pruning over the torchvision zoo (`benchmarks/bench_block_zoo.py`)",
        "",
        f"Measured {machine()}. Every classifier of torchvision {torchvision.__version__.split('+')[0]} (random init, 10 classes): "
        "the removable blocks BlockPruning finds (repeated blocks with their own forward whose output keeps the input's shape), "
        "a quarter of them removed (importance=\"influence\": those that change their input least), saved as .dsz and loaded "
        "back from the factory spec; the loaded model's outputs must equal the pruned model's exactly. "
        f"{len(ok)} models pass, {len(failed)} fail, {len(none)} have no removable blocks, "
        f"{sum(1 for r in rows if r['ok'] is None and 'blocks' not in r)} not run (too large).",
        "",
        "| model | blocks found (kind) | removed | params kept | MACs kept | note |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        status = "ok" if r["ok"] else ("-" if r["ok"] is None else "FAIL")
        kinds = f"{r['blocks']} ({', '.join(r.get('kinds', []))})" if "blocks" in r else "-"
        removed = ", ".join(r.get("removed", []))[:80] or "-"
        params = f"{r['param_fraction']:.2f}" if "param_fraction" in r else "-"
        macs = f"{r['mac_fraction']:.2f}" if "mac_fraction" in r else "-"
        lines.append(f"| {r['model']} {status} | {kinds} | {removed} | {params} | {macs} | {r.get('why', '')} |")
    write_section("block-zoo", "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
