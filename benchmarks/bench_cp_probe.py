"""How many ALS sweeps the CP sensitivity trials need: ranks, accuracy and time at probe_iterations 200, 25 and 10.

A small ResNet (``resnet_small``, width 32) trained on mnist5k is CP-factorized to 32% of its convolutions'
parameters with ranks from measured sensitivity (6 ranks per layer, as ``recipes/cp.yaml``); the final fit of
every layer runs 200 sweeps in all three runs, only the trial fits of the sensitivity curves change. Accuracy
is before any fine-tuning (validation split: what the ranks were chosen on; test split: reported). Writes
``benchmarks/results/cp_probe.json`` and the section ``cp-probe`` of BENCHMARKS.md.

Run: .venv/bin/python benchmarks/bench_cp_probe.py
"""

from __future__ import annotations

import copy
import json
import time

import torch

import deepshrink as ds
from deepshrink.factorize.cp import cp_als
from deepshrink.train.engine import evaluate, train

from _report import ROOT, machine, write_section

OUT = ROOT / "benchmarks" / "results" / "cp_probe.json"
PROBES = (200, 25, 10)


def sweep_seconds() -> dict[str, float]:
    """Seconds per ALS sweep on a ResNet-18-sized 512x512x3x3 weight, at the ranks a third of its parameters allows."""
    w = torch.randn(512, 512, 3, 3)
    out = {}
    for rank in (200, 700):
        t0 = time.perf_counter()
        cp_als(w, rank, iterations=5, tol=0.0)
        out[str(rank)] = (time.perf_counter() - t0) / 5
    return out


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    data = ds.data.load("mnist5k")
    model = ds.models.create("resnet_small", blocks=2, width=32)
    train(model, data, ds.TrainConfig(epochs=4, lr=0.05, optimizer="sgd", progress=False))
    results = {"machine": machine(), "baseline": {"val": evaluate(model, data.val)["accuracy"], "test": evaluate(model, data.test)["accuracy"]},
               "sweep_seconds_512": sweep_seconds(), "runs": []}
    for probe in PROBES:
        m = copy.deepcopy(model)
        cfg = ds.CP(ratio=0.32, allocation="sensitivity", levels=6, iterations=200, probe_iterations=probe, progress=False)
        t0 = time.perf_counter()
        report = ds.factorize_(m, cfg, data=data)
        run = {"probe_iterations": probe, "seconds": time.perf_counter() - t0,
               "ranks": {n: r["rank"] for n, r in report.per_layer.items()},
               "param_ratio": report.figures["layer_params_after"] / report.figures["layer_params_before"],
               "val": evaluate(m, data.val)["accuracy"], "test": evaluate(m, data.test)["accuracy"]}
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    full = results["runs"][0]["ranks"]
    lines = ["### CP sensitivity trials: how many ALS sweeps (`benchmarks/bench_cp_probe.py`)", "",
             f"Measured {results['machine']}. resnet_small (width 32) trained on mnist5k (test accuracy "
             f"{results['baseline']['test']:.3f}), CP to 32% of its convolutions' parameters, ranks by sensitivity (6 per layer); "
             "every final fit runs 200 sweeps, only the sensitivity trials change (`CP.probe_iterations`, default 25). "
             "Accuracy before fine-tuning. One ALS sweep of a 512x512x3x3 weight takes "
             + ", ".join(f"{v:.2f} s at rank {k}" for k, v in results["sweep_seconds_512"].items())
             + ": on ResNet-18, 200-sweep trials at 6 ranks per layer kept the sensitivity phase busy for over 11 minutes.", "",
             "| trial sweeps | seconds | layers whose rank differs from 200 | kept params | val | test |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        differ = sum(1 for n in set(full) | set(r["ranks"]) if full.get(n) != r["ranks"].get(n))
        lines.append(f"| {r['probe_iterations']} | {r['seconds']:.0f} | {differ} of {len(set(full) | set(r['ranks']))} | "
                     f"{r['param_ratio']:.3f} | {r['val']:.3f} | {r['test']:.3f} |")
    write_section("cp-probe", "\n".join(lines))


if __name__ == "__main__":
    main()
