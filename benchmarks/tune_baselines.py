"""Choose the default training settings of `deepshrink train` for LeNet-300-100 and LeNet-5.

Selection uses the validation split only; the test accuracy of the chosen setting is
reported by benchmarks/bench_baselines.py. Writes benchmarks/results/tune_baselines.json.

    python benchmarks/tune_baselines.py [--model lenet5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import deepshrink as ds

CANDIDATES = {
    "lenet300": [
        dict(epochs=40, lr=0.05, optimizer="sgd", weight_decay=5e-4, augment="affine"),
        dict(epochs=100, lr=0.05, optimizer="sgd", weight_decay=5e-4, augment="affine"),
        dict(epochs=100, lr=0.1, optimizer="sgd", weight_decay=5e-4, augment="affine", label_smoothing=0.1),
        dict(epochs=100, lr=0.05, optimizer="sgd", weight_decay=1e-3, augment="affine"),
        dict(epochs=150, lr=0.05, optimizer="sgd", weight_decay=5e-4, augment="affine", batch_size=128),
    ],
    "lenet5": [
        dict(epochs=30, lr=0.05, optimizer="sgd", weight_decay=5e-4, augment="affine"),
        dict(epochs=40, lr=0.05, optimizer="sgd", weight_decay=5e-4, augment="affine", label_smoothing=0.1),
        dict(epochs=30, lr=2e-3, optimizer="adamw", weight_decay=5e-4, augment="affine"),
        dict(epochs=40, lr=0.02, optimizer="sgd", weight_decay=5e-4, augment="affine", batch_size=32),
        dict(epochs=60, lr=2e-3, optimizer="adamw", weight_decay=5e-4, augment="affine"),
        dict(epochs=60, lr=2e-3, optimizer="adamw", weight_decay=5e-4, augment="affine", label_smoothing=0.1),
        dict(epochs=60, lr=0.05, optimizer="sgd", weight_decay=5e-4, augment="affine", label_smoothing=0.1),
        dict(epochs=60, lr=1e-3, optimizer="adamw", weight_decay=0.05, augment="affine"),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(CANDIDATES), action="append")
    parser.add_argument("--only", type=int, action="append", help="run only these candidate indices")
    parser.add_argument("--tag", default="", help="suffix of the results file (for parallel runs)")
    args = parser.parse_args()
    data = ds.data.load("mnist5k")
    results = []
    for spec in args.model or sorted(CANDIDATES):
        for i, kw in enumerate(CANDIDATES[spec]):
            if args.only and i not in args.only:
                continue
            torch.manual_seed(0)
            model = ds.models.create(spec)
            t = time.perf_counter()
            out = ds.train(model, data, ds.TrainConfig(progress=False, **kw))
            row = {"model": spec, "candidate": i, "settings": kw, "seconds": time.perf_counter() - t,
                   "val_accuracy": out["val"]["val_accuracy"]}
            results.append(row)
            print(json.dumps(row), flush=True)
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"tune_baselines{args.tag}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
