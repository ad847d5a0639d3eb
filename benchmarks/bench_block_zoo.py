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

With ``--bridge`` it checks ``BlockPruning(bridge=True)`` instead, over one or two models of every family
(``BRIDGE_ZOO``): a quarter of the blocks removed and each run of them replaced by a linear bridge fitted on
the example inputs; the loaded model must equal the pruned one exactly, and the bridge's kind (a 1x1
convolution over channels-first maps, a Linear over tokens or channels-last maps) is recorded. Writes
``benchmarks/results/structured/block_zoo_bridged.json`` and the section ``block-zoo-bridged``.

Run: .venv/bin/python benchmarks/bench_block_zoo.py [--bridge] [NAME ...]
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
OUT_BRIDGED = ROOT / "benchmarks" / "results" / "structured" / "block_zoo_bridged.json"
# One or two models of every family: residual CNNs, inverted residuals, RegNet, ConvNeXt (channels first with
# channels-last layers inside), Fire modules without a skip, ViT tokens, Swin and MaxViT (channels-last maps).
BRIDGE_ZOO = ["resnet18", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
              "efficientnet_v2_s", "mnasnet0_5", "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny", "squeezenet1_1",
              "shufflenet_v2_x0_5", "vit_b_16", "swin_t", "swin_v2_t", "maxvit_t"]


def reloaded_equal(model: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether ``model`` saved as .dsz and loaded back from its factory spec gives exactly its outputs on ``x``."""
    with tempfile.TemporaryDirectory() as tmp:
        ds.save(model, Path(tmp) / "m.dsz")
        loaded = ds.load(Path(tmp) / "m.dsz").eval()
    with torch.no_grad():
        return torch.equal(loaded(x), model(x))


def failure(row: dict, exc: Exception) -> None:
    row.update(ok=False, why=f"{type(exc).__name__}: {(str(exc).splitlines() or ['(no message)'])[0][:200]}",
               trace=traceback.format_exc()[-2000:])


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
            same = reloaded_equal(model, x)
            row.update(ok=same, removed=report.changed, search=report.figures.get("search"),
                       param_fraction=report.figures["params_after"] / row["params"],
                       mac_fraction=total_macs(model, (x,)) / max(macs, 1))
            if not same:
                row["why"] = "the loaded model's outputs differ from the pruned model's"
    except Exception as exc:  # noqa: BLE001 -- a benchmark records every failure and goes on
        failure(row, exc)
    row["seconds"] = time.perf_counter() - t0
    return row


def check_bridged(name: str) -> dict:
    from deepshrink.prune.bridges import LinearBridge

    t0 = time.perf_counter()
    model, x, row = zoo_model(name)
    model.eval()
    try:
        with torch.no_grad():
            before = model(x)
        report = ds.prune_(model, ds.BlockPruning(ratio=0.25, importance="influence", bridge=True, measure_latency=False),
                           example_inputs=(x,))
        bridges = [m for m in model.modules() if isinstance(m, LinearBridge)]
        same = reloaded_equal(model, x)
        with torch.no_grad():
            after = model(x)
        row.update(ok=same, removed=report.changed, bridges=len(bridges), kinds=sorted({b.kind for b in bridges}),
                   fit_errors=report.figures.get("bridges", {}), shape_kept=tuple(after.shape) == tuple(before.shape))
        if not same:
            row["why"] = "the loaded model's outputs differ from the pruned model's"
    except Exception as exc:  # noqa: BLE001 -- a benchmark records every failure and goes on
        failure(row, exc)
    row["seconds"] = time.perf_counter() - t0
    return row


def main_bridged(names: list[str]) -> None:
    rows = run_zoo(names or BRIDGE_ZOO, OUT_BRIDGED, check_bridged, lambda row: f"bridges={row.get('bridges', '-')}")
    lines = [
        "### Bridged depth pruning over the torchvision families (`bench_block_zoo.py --bridge`)",
        "",
        f"Measured {machine()}. As above, with `BlockPruning(bridge=True)`: each run of removed blocks replaced by one "
        "linear map fitted by least squares on the example inputs (2 images; random weights, so the fit errors say "
        "nothing about accuracy). kind: a 1x1 convolution over channels-first feature maps, a Linear over tokens or "
        f"channels-last maps. {sum(1 for r in rows if r['ok'])} of {len(rows)} models pass.",
        "",
        "| model | removed | bridges (kind) | largest fit error | note |",
        "|---|---|---|---:|---|",
    ]
    for r in rows:
        status = "ok" if r["ok"] else "FAIL"
        errors = [e for e in r.get("fit_errors", {}).values() if e is not None]
        worst = f"{max(errors):.2f}" if errors else "-"
        kinds = f"{r.get('bridges', '-')} ({', '.join(r.get('kinds', []))})"
        lines.append(f"| {r['model']} {status} | {', '.join(r.get('removed', []))[:70] or '-'} | {kinds} | {worst} | {r.get('why', '')} |")
    write_section("block-zoo-bridged", "\n".join(lines))


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
    args = sys.argv[1:]
    if "--bridge" in args:
        main_bridged([a for a in args if a != "--bridge"])
    else:
        main(args)
