"""Early exits on LeNet-5 / mnist5k: average MACs, measured latency and accuracy per input against the full network.

The LeNet-5 of `_teacher.py` (trained with `deepshrink train`'s defaults) gets exits after
`pool1` and `pool2` (`deepshrink.add_exits_`), trained on the frozen backbone
(`deepshrink.train_exits(..., freeze_backbone=True)`: the network's own outputs do not
change), then thresholds are set on the validation split (`deepshrink.calibrate_exits`,
at most 0.2 points below the full network's validation accuracy). The head shape is
chosen on the validation split (fewest MACs at the calibrated thresholds); figures are
then measured on the test split (`deepshrink.exit_report`). The model is saved as .dsz,
loaded back, and its test outputs compared bit for bit.

    python benchmarks/bench_exits.py
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402
from _teacher import lenet5_teacher  # noqa: E402

import deepshrink as ds  # noqa: E402
from deepshrink.dynamic import predict_with_exits  # noqa: E402

AFTER = ["pool1", "pool2"]
HEADS = [{"pool": 4, "hidden": 0}, {"pool": 6, "hidden": 64}, {"pool": 4, "hidden": 0, "channels": 8}]
TRAIN = ds.TrainConfig(epochs=15, batch_size=64, optimizer="adamw", lr=2e-3, schedule="cosine", progress=False,
                       eval_every_epoch=False)
MAX_DROP = 0.002


def with_exits(teacher: torch.nn.Module, data: ds.data.DataBundle, head: dict) -> tuple[torch.nn.Module, dict]:
    model = copy.deepcopy(teacher)
    ds.add_exits_(model, ds.EarlyExits(after=AFTER, **head), data=data)
    t = time.perf_counter()
    ds.train_exits(model, data, TRAIN, freeze_backbone=True)
    seconds = time.perf_counter() - t
    cal = ds.calibrate_exits(model, data.val, max_drop=MAX_DROP)
    val = ds.exit_report(model, data.val, latency_inputs=0)
    row = {"head": head, "train_seconds": round(seconds, 1), "calibration": cal.figures, "val": val}
    print(json.dumps({"head": head, "val_macs_reduction": val["macs_reduction"], "val_accuracy": val["accuracy"],
                      "full_val_accuracy": val["full_accuracy"]}), flush=True)
    return model, row


def main() -> None:
    torch.set_num_threads(1)
    data = ds.data.load("mnist5k")
    teacher, teacher_info = lenet5_teacher(data)
    candidates = [with_exits(teacher, data, head) for head in HEADS]
    model, chosen = min(candidates, key=lambda c: (not c[1]["calibration"]["met"], c[1]["val"]["macs_per_input"]))
    test = ds.exit_report(model, data.test, latency_inputs=300, repeats=7, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lenet5-exits.dsz")
        saved = ds.save(model, path)
        again = ds.load(path)
        x = data.test.tensors[0]  # type: ignore[attr-defined]
        with torch.no_grad():
            a, ta = predict_with_exits(model.eval(), x)
            b, tb = predict_with_exits(again, x)
        round_trip = bool(torch.equal(a, b) and torch.equal(ta, tb))
    out = {"machine": machine(), "teacher": teacher_info, "after": AFTER, "train": TRAIN.to_dict(), "max_drop": MAX_DROP,
           "candidates": [c[1] for c in candidates], "chosen_head": chosen["head"], "test": test,
           "dsz_bytes": saved.file_bytes, "dsz_round_trip_equal": round_trip}
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "exits.json").write_text(json.dumps(out, indent=2))
    head = chosen["head"]
    lines = [
        "## Early exits on LeNet-5 / mnist5k (`benchmarks/bench_exits.py`)",
        "",
        f"Measured {machine()}. LeNet-5 ({100 * teacher_info['test_accuracy']:.1f}% test accuracy) with exits after"
        f" {', '.join(f'`{a}`' for a in AFTER)}; heads {head} chosen on the validation split among {HEADS},",
        f"trained {TRAIN.epochs} epochs on the frozen backbone; thresholds from `calibrate_exits(model, data.val,"
        f" max_drop={MAX_DROP})` ({', '.join(f'{t:.4f}' for t in test['thresholds'])}, max softmax probability).",
        "Test split (1,000 digits): MACs counted on the operations that ran (`deepshrink.analysis.macs`),",
        f"latency per input (batch of one, one thread) = mean over the first {test.get('latency_inputs', 0)} test digits of the median of 7 runs",
        "(`deepshrink.analysis.measure_latency`), early-exit and full network alternating input by input. Raw figures: `benchmarks/results/exits.json`.",
        "",
        "| | full LeNet-5 | with early exits | change |",
        "|---|---:|---:|---:|",
        f"| test accuracy | {100 * test['full_accuracy']:.1f}% | {100 * test['accuracy']:.1f}% |"
        f" {100 * (test['accuracy'] - test['full_accuracy']):+.1f} points |",
        f"| MACs per input (mean) | {test['full_macs_per_input']:,.0f} | {test['macs_per_input']:,.0f} | {-100 * test['macs_reduction']:+.1f}% |",
        f"| latency per input (ms) | {test['full_latency_ms_per_input']:.3f} | {test['latency_ms_per_input']:.3f} |"
        f" {100 * (test['latency_ratio'] - 1):+.1f}% |",
        "",
        "Share of test inputs leaving at each exit (MACs spent by an input leaving there): "
        + ", ".join(f"`{k}` {100 * v:.1f}% ({test['macs_if_leaving_at'].get(k, 0):,})" for k, v in test["exit_share"].items()) + ".",
        f"Saved as .dsz ({saved.file_bytes:,} bytes; exits rebuilt from the surgery log, thresholds stored as a buffer) and loaded"
        f" back: test outputs and exits {'identical' if round_trip else 'DIFFERENT'} (torch.equal).",
    ]
    write_section("exits", "\n".join(lines))


if __name__ == "__main__":
    main()
