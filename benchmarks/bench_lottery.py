"""The lottery-ticket experiment (Frankle & Carbin 2019) on mnist5k with LeNet-300-100, by the real command.

Runs ``deepshrink lottery --model lenet300 --data mnist5k --rounds 12 --rate 0.2 --layer-rate fc3=0.1``
(the paper's rates: 20% of the hidden layers' survivors per round, 10% of the output layer's), rewinding
to the initial weights, with the random re-initialisation control. Every round trains the default
LeNet-300-100 settings for EPOCHS epochs (fewer than the default 150, so that the 25 training runs fit
in about 20 minutes on 2 shared cores; the dense network is trained with the same schedule).

Outputs: benchmarks/results/lottery/lottery.json and lottery.png, a summary in
benchmarks/results/lottery.json and the `lottery` section of BENCHMARKS.md. Rerun to resume.

    python benchmarks/bench_lottery.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _report import machine, write_section

BIN = Path(sys.executable).parent
OUT = Path(__file__).parent / "results" / "lottery"
SUMMARY = Path(__file__).parent / "results" / "lottery.json"
EPOCHS = 60
ROUNDS = 12


def main() -> None:
    t = time.perf_counter()
    cmd = [str(BIN / "deepshrink"), "lottery", "--model", "lenet300", "--data", "mnist5k", "--rounds", str(ROUNDS),
           "--rate", "0.2", "--layer-rate", "fc3=0.1", "--epochs", str(EPOCHS), "--seed", "0", "--no-progress",
           "--out", str(OUT)]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - t
    result = json.loads((OUT / "lottery.json").read_text())
    shutil.rmtree(OUT / "state", ignore_errors=True)  # masks and snapshots: only needed to resume
    rows = result["rounds"]
    dense = rows[0]["ticket"]["test_accuracy"]

    def nearest(density: float) -> dict:
        return min(rows[1:], key=lambda r: abs(r["density"] - density))

    checks = {}
    for label, target in (("20%", 0.20), ("7%", 0.07)):
        r = nearest(target)
        checks[label] = {"round": r["round"], "density": r["density"], "ticket": r["ticket"]["test_accuracy"],
                         "control": r["control"]["test_accuracy"], "dense": dense,
                         "ticket_ge_dense": r["ticket"]["test_accuracy"] >= dense,
                         "ticket_gt_control": r["ticket"]["test_accuracy"] > r["control"]["test_accuracy"]}
    SUMMARY.write_text(json.dumps({"machine": machine(), "command": cmd[1:], "seconds": round(seconds, 1),
                                   "checks": checks}, indent=2) + "\n")
    lines = [
        "## Lottery tickets: iterative magnitude pruning with rewinding (`benchmarks/bench_lottery.py`)",
        "",
        f"Measured {machine()}. `deepshrink lottery --model lenet300 --data mnist5k --rounds {ROUNDS} --rate 0.2",
        f"--layer-rate fc3=0.1 --epochs {EPOCHS}`: each round prunes 20% of the surviving weights of fc1 and fc2",
        "and 10% of fc3 (the paper's rates) by magnitude, per layer, rewinds the survivors to their initial values",
        "and trains again; the control trains the same mask from a random re-initialisation. Every run uses the",
        f"default LeNet-300-100 settings for {EPOCHS} epochs (SGD Nesterov lr 0.05, cosine, weight decay 5e-4, affine",
        f"augmentation); test accuracy on the 1,000 test digits. Whole experiment: {seconds / 60:.1f} min (25 training runs).",
        "",
        "| round | weights remaining | winning ticket | random re-init | early-stop epoch (ticket / re-init) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ctrl = r.get("control")
        ctrl_acc = "" if ctrl is None else f"{100 * ctrl['test_accuracy']:.2f}%"
        ctrl_stop = "" if ctrl is None else f" / {ctrl['early_stop_epoch']}"
        lines.append(f"| {r['round']} | {100 * r['density']:.1f}% | {100 * r['ticket']['test_accuracy']:.2f}% | "
                     f"{ctrl_acc} | {r['ticket']['early_stop_epoch']}{ctrl_stop} |")
    lines += [""]
    for label, c in checks.items():
        lines.append(f"- At {label} (round {c['round']}, {100 * c['density']:.1f}% of the weights): ticket {100 * c['ticket']:.2f}% "
                     f"vs dense {100 * c['dense']:.2f}% ({'at least as accurate' if c['ticket_ge_dense'] else 'LESS accurate'}) "
                     f"and vs random re-init {100 * c['control']:.2f}% ({'better' if c['ticket_gt_control'] else 'NOT better'}).")
    lines += ["", "Early-stop epoch: the epoch of the lowest validation loss.",
              "![lottery](benchmarks/results/lottery/lottery.png)",
              "Raw figures: `benchmarks/results/lottery/lottery.json`, `benchmarks/results/lottery.json`."]
    write_section("lottery", "\n".join(lines))


if __name__ == "__main__":
    main()
