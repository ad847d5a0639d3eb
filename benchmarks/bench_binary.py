"""Binary and ternary LeNet-5 on mnist5k: accuracy and .dsz size of BinaryConnect, XNOR-Net and TWN.

Starts from the LeNet-5 baseline of `deepshrink train` (defaults, seed 0), installs the low-bit weights with
real-valued shadow weights, fine-tunes through them (straight-through gradients) and converts. The
recipes `binary` (XNOR-Net) and `ternary` (TWN) are run as is; BinaryConnect uses the binary recipe's
schedule with `method: binaryconnect`. The schedules are the recipes' (fixed, not tuned on the test split);
validation accuracy is shown beside the test accuracy on the 1,000 test digits.

    python benchmarks/bench_binary.py
    python benchmarks/bench_binary.py report   # rewrite the BENCHMARKS.md section from results/binary.json
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from _report import machine, write_section
from bench_int8 import lenet5_baseline

import deepshrink as ds
from deepshrink.recipe import Recipe

RESULTS = Path(__file__).parent / "results"


def variants() -> dict[str, Recipe]:
    binary = ds.load_recipe("binary")
    bc_stage = replace(binary.stages[0], config=ds.BinaryWeights(method="binaryconnect"))
    return {
        "BinaryConnect (1 bit, one scale per layer)": replace(binary, name="binaryconnect", stages=(bc_stage, *binary.stages[1:])),
        "XNOR-Net (1 bit, one scale per channel; recipe binary)": binary,
        "TWN ternary (recipe ternary)": ds.load_recipe("ternary"),
    }


def main() -> None:
    if sys.argv[1:] == ["report"]:  # rewrite the BENCHMARKS.md section from results/binary.json, measuring nothing
        res = json.loads((RESULTS / "binary.json").read_text())
        write_section("binary", markdown(res["rows"], res["machine"]))
        return
    torch.set_num_threads(1)
    data = ds.data.load("mnist5k")
    base = lenet5_baseline()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32_bytes = ds.save(base, Path(tmp) / "fp32.dsz").file_bytes
        rows.append({"model": "fp32 baseline", "val_accuracy": ds.evaluate(base, data.val)["accuracy"],
                     "test_accuracy": ds.evaluate(base, data.test)["accuracy"], "dsz_bytes": fp32_bytes,
                     "ratio": 1.0, "epochs": None})
        for name, recipe in variants().items():
            model = copy.deepcopy(base)
            report = ds.run_recipe(model, data, recipe, train_overrides={"progress": False})
            saved = ds.save(model, Path(tmp) / "m.dsz")
            codes = [t for t in saved.tensors if t["name"].endswith("weight_code")]
            code_bits = 8 * sum(t["bytes"] for t in codes) / sum(t["numel"] for t in codes)
            rows.append({"model": name, "val_accuracy": ds.evaluate(model, data.val)["accuracy"],
                         "test_accuracy": ds.evaluate(model, data.test)["accuracy"], "dsz_bytes": saved.file_bytes,
                         "ratio": fp32_bytes / saved.file_bytes, "code_bits_per_weight": code_bits,
                         "epochs": recipe.stages[0].finetune.epochs if recipe.stages[0].finetune else 0,
                         "seconds": report.seconds})
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "binary.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    write_section("binary", markdown(rows, machine()))


def markdown(rows: list[dict[str, Any]], measured: str) -> str:
    lines = ["## Binary and ternary LeNet-5 (`benchmarks/bench_binary.py`)", "",
             f"Measured {measured} (a 2-core machine shared with other jobs). LeNet-5 baseline from `deepshrink train`"
             " (defaults, seed 0); every layer",
             "binarized or ternarized, fine-tuned through real-valued shadow weights, converted, saved as .dsz.",
             "Size is the .dsz file on disk (biases and per-channel scales in float32 included); the fp32 row is",
             "the baseline saved the same way. Accuracy on the 1,000 test digits (validation shown for reference).", "",
             "| model | fine-tune epochs | val accuracy | test accuracy | .dsz bytes | vs fp32 .dsz | weight code bits |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        bits = f"{r['code_bits_per_weight']:.2f}" if "code_bits_per_weight" in r else "32"
        lines.append(f"| {r['model']} | {r['epochs'] or '-'} | {100 * r['val_accuracy']:.2f}% | {100 * r['test_accuracy']:.2f}% | "
                     f"{r['dsz_bytes']:,} | {r['ratio']:.1f}x | {bits} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
