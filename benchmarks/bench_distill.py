"""Hinton et al.'s MNIST finding at our scale: a small student learns more from a teacher than from labels.

On mnist5k (3,500 training digits), a 784-100-10 student (`mlp`, hidden=[100]) is trained
(a) on the labels alone and (b) distilled from a LeNet-5 teacher (`deepshrink.distill`),
and (c) through a teacher assistant (LeNet-5 -> LeNet-300-100 -> student). All use the same
optimiser settings and no augmentation. The number of epochs (both), the temperature and
alpha (distillation) are chosen on the validation split with seed 0; test accuracy is then
reported for seeds 0, 1, 2 (student initialisation and batch order).

    python benchmarks/bench_distill.py

The teacher's outputs on the training digits are computed once and looked up (MemoTeacher),
which is exact (no augmentation, eval mode) and keeps the many student runs cheap.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402
from _teacher import lenet5_teacher  # noqa: E402

import deepshrink as ds  # noqa: E402

STUDENT = {"spec": "mlp", "hidden": [100]}
ASSISTANT = "lenet300"
BASE = ds.TrainConfig(epochs=30, batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.0, schedule="cosine",
                      progress=False, eval_every_epoch=False)
EPOCHS = (20, 40)  # labels-only: chosen on validation
KD_EPOCHS = 40
TEMPERATURES = (2.0, 4.0, 8.0)
ALPHAS = (0.5, 0.9)
SEEDS = (0, 1, 2)


class MemoTeacher(torch.nn.Module):
    """The teacher's outputs on the (un-augmented) training inputs, computed once and looked up by input.

    Identical to running the teacher (eval mode, same inputs) but cheap: the benchmark
    trains many students from one teacher. Unknown inputs are passed to the teacher.
    """

    def __init__(self, teacher: torch.nn.Module, inputs: torch.Tensor) -> None:
        super().__init__()
        self.teacher = teacher.eval()
        with torch.no_grad():
            logits = torch.cat([teacher(inputs[i : i + 500]) for i in range(0, len(inputs), 500)])
        self.table = {row.numpy().tobytes(): out for row, out in zip(inputs, logits)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = [self.table.get(r.numpy().tobytes()) for r in x]
        if any(r is None for r in rows):
            return self.teacher(x)
        return torch.stack(rows)


def student(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ds.models.create(STUDENT["spec"], hidden=STUDENT["hidden"])


def run(kind: str, data: ds.data.DataBundle, teacher: torch.nn.Module, epochs: int, seed: int,
        kd: ds.KD | None = None) -> dict:
    cfg = BASE.replace(epochs=epochs, seed=seed)
    model = student(seed)
    t = time.perf_counter()
    if kind == "labels":
        ds.train(model, data, cfg)
    elif kind == "distill":
        ds.distill(model, teacher, data, kd, cfg)
    else:  # teacher assistant chain
        torch.manual_seed(1000 + seed)
        assistant = ds.models.create(ASSISTANT)
        ds.distill(model, teacher, data, kd, cfg, assistants=[assistant])
    row = {"kind": kind, "epochs": epochs, "seed": seed, "seconds": round(time.perf_counter() - t, 1),
           "val_accuracy": ds.evaluate(model, data.val)["accuracy"], "test_accuracy": ds.evaluate(model, data.test)["accuracy"]}
    if kd is not None:
        row.update({"temperature": kd.temperature, "alpha": kd.alpha})
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    torch.set_num_threads(1)
    data = ds.data.load("mnist5k")
    teacher, teacher_info = lenet5_teacher(data)
    print(json.dumps({"teacher": teacher_info}), flush=True)
    x_train = data.train.tensors[0]  # type: ignore[attr-defined]
    memo = MemoTeacher(teacher, x_train)
    with torch.no_grad():
        assert torch.equal(memo(x_train[:64]), teacher(x_train[:64]))
    tuning = []
    # 1. Choose on the validation split (seed 0): epochs for labels-only; epochs, T, alpha for distillation.
    for epochs in EPOCHS:
        tuning.append(run("labels", data, teacher, epochs, 0))
    for temp, alpha in itertools.product(TEMPERATURES, ALPHAS):
        tuning.append(run("distill", data, memo, KD_EPOCHS, 0, ds.KD(temperature=temp, alpha=alpha)))
    best_labels = max((r for r in tuning if r["kind"] == "labels"), key=lambda r: r["val_accuracy"])
    best_kd = max((r for r in tuning if r["kind"] == "distill"), key=lambda r: r["val_accuracy"])
    kd = ds.KD(temperature=best_kd["temperature"], alpha=best_kd["alpha"])
    # 2. Report test accuracy over three seeds with the chosen settings.
    final = []
    for seed in SEEDS:
        final.append(run("labels", data, memo, best_labels["epochs"], seed))
        final.append(run("distill", data, memo, best_kd["epochs"], seed, kd))
        final.append(run("assistant", data, memo, best_kd["epochs"], seed, kd))
    summary = {}
    for kind in ("labels", "distill", "assistant"):
        accs = [r["test_accuracy"] for r in final if r["kind"] == kind]
        vals = [r["val_accuracy"] for r in final if r["kind"] == kind]
        summary[kind] = {"test_mean": statistics.fmean(accs), "test_std": statistics.stdev(accs), "test": accs,
                         "val_mean": statistics.fmean(vals)}
    out = {"machine": machine(), "teacher": teacher_info, "student": STUDENT, "assistant": ASSISTANT,
           "base_train": {k: v for k, v in BASE.to_dict().items() if k not in ("type", "version", "epochs", "seed")},
           "chosen": {"labels_epochs": best_labels["epochs"], "distill_epochs": best_kd["epochs"],
                      "temperature": kd.temperature, "alpha": kd.alpha},
           "tuning": tuning, "final": final, "summary": summary}
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "distill.json").write_text(json.dumps(out, indent=2))
    s = summary
    gain = 100 * (s["distill"]["test_mean"] - s["labels"]["test_mean"])
    lines = [
        "## Knowledge distillation on mnist5k (`benchmarks/bench_distill.py`)",
        "",
        f"Measured {machine()}. Hinton et al. (2015)'s MNIST experiment at our scale: a 784-100-10 student",
        f"(`mlp`, hidden=[100], 79,510 parameters) trained on the 3,500 training digits, on the labels alone or",
        f"distilled from a LeNet-5 teacher ({100 * teacher_info['test_accuracy']:.1f}% test accuracy, 431,080 parameters) with",
        "`deepshrink.distill`, and through a teacher assistant (LeNet-5 -> LeNet-300-100 -> student, the same settings per link).",
        f"Same optimiser for all (AdamW, lr 1e-3, batch 64, cosine schedule, no augmentation). Chosen on the validation split",
        f"(seed 0): labels-only {best_labels['epochs']} epochs (of {list(EPOCHS)}); distillation {best_kd['epochs']} epochs,"
        f" T = {kd.temperature:g}, alpha = {kd.alpha:g} (of T in {list(TEMPERATURES)}, alpha in {list(ALPHAS)}; {KD_EPOCHS} epochs).",
        "Test accuracy on the 1,000 test digits, mean and standard deviation over seeds 0, 1, 2. Raw figures:",
        "`benchmarks/results/distill.json`.",
        "",
        "| student trained by | test accuracy (mean +- std, 3 seeds) | per seed |",
        "|---|---:|---|",
    ]
    names = {"labels": "labels alone (cross-entropy)", "distill": "distillation from LeNet-5",
             "assistant": "LeNet-5 -> LeNet-300-100 assistant -> student"}
    for kind in ("labels", "distill", "assistant"):
        r = s[kind]
        lines.append(f"| {names[kind]} | {100 * r['test_mean']:.2f}% +- {100 * r['test_std']:.2f} | "
                     + ", ".join(f"{100 * a:.1f}%" for a in r["test"]) + " |")
    lines += ["", f"Distillation changes the student's mean test accuracy by {gain:+.2f} points against labels alone."]
    write_section("distill", "\n".join(lines))


if __name__ == "__main__":
    main()
