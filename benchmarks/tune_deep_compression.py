"""Compare Deep Compression recipe variants on the validation split (selection only; no test figures).

Reuses the baselines that `deepshrink demo --out DIR` cached in DIR/baselines.

    python benchmarks/tune_deep_compression.py --baselines demo-out/baselines --model lenet5 RECIPE.yaml ...
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import deepshrink as ds
from deepshrink.commands.common import build_model, load_weights_into


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baselines", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("recipes", nargs="+")
    args = parser.parse_args()
    data = ds.data.load("mnist5k")
    rows = []
    for recipe in args.recipes:
        torch.manual_seed(0)
        model = build_model(args.model, data)
        load_weights_into(model, args.baselines / f"{args.model}.safetensors")
        base_val = ds.evaluate(model, data.val)["accuracy"]
        report = ds.run_recipe(model, data, ds.load_recipe(recipe), train_overrides={"progress": False})
        with tempfile.TemporaryDirectory() as tmp:
            saved = ds.save(model, Path(tmp) / "m.dsz")
        row = {"recipe": recipe, "base_val": base_val, "stages": [(s["name"], s["val"]["accuracy"]) for s in report.stages],
               "bytes": saved.file_bytes, "ratio": round(saved.ratio, 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
