"""Baselines on mnist5k trained by `deepshrink train` with default settings and seed 0.

Runs the real command line (as a user would), times each run, and reads the test
accuracy that `deepshrink eval` reports on the written weights. The default settings
were chosen on the validation split by benchmarks/tune_baselines.py.

    python benchmarks/bench_baselines.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import machine, write_section

BIN = Path(sys.executable).parent
TARGETS = {"lenet300": 0.965, "lenet5": 0.985}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec, target in TARGETS.items():
            out = Path(tmp) / f"{spec}.safetensors"
            t = time.perf_counter()
            subprocess.run([str(BIN / "deepshrink"), "train", "--model", spec, "--data", "mnist5k", "--seed", "0",
                            "--out", str(out), "--no-progress"], check=True)
            seconds = time.perf_counter() - t
            res = subprocess.run([str(BIN / "deepshrink"), "eval", str(out), "--data", "mnist5k", "--json"],
                                 check=True, capture_output=True, text=True)
            acc = json.loads(res.stdout.strip().splitlines()[-1])["accuracy"]
            rows.append({"model": spec, "seconds": round(seconds, 1), "test_accuracy": acc, "target": target})
            print(json.dumps(rows[-1]), flush=True)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "baselines.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    lines = [
        "## Baselines on mnist5k (`benchmarks/bench_baselines.py`)",
        "",
        f"Measured {machine()}. `deepshrink train --model M --data mnist5k --seed 0` with default settings",
        "(chosen on the validation split by `benchmarks/tune_baselines.py`), test accuracy from `deepshrink eval`",
        "on the 1,000 test digits; time is the whole command, start-up included.",
        "",
        "| model | test accuracy | target | wall time (s) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {100 * r['test_accuracy']:.1f}% | {100 * r['target']:.1f}% | {r['seconds']:.0f} |")
    write_section("baselines", "\n".join(lines))


if __name__ == "__main__":
    main()
