"""Deep Compression of LeNet-300-100 and LeNet-5 on mnist5k: the headline demo, measured.

Runs `deepshrink.demo.run_demo` (baselines trained with default settings, the
`deep-compression-lenet300` / `deep-compression-lenet5` recipes, save to .dsz, reload,
evaluate the reloaded model on the test split) and writes the table to BENCHMARKS.md.

    python benchmarks/bench_deep_compression.py
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from _report import machine, write_section

from deepshrink.demo import PAPER, run_demo

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    out = RESULTS / "deep_compression"
    shutil.rmtree(out, ignore_errors=True)  # train the baselines afresh: the timing includes them
    t = time.perf_counter()
    report = run_demo(out)
    total = time.perf_counter() - t
    (RESULTS / "deep_compression.json").write_text(json.dumps({"machine": machine(), "total_seconds": total, **report}, indent=2))
    for p in out.glob("baselines"):
        shutil.rmtree(p)
    papers = {p.name: p for p in PAPER}
    lines = [
        "## Deep Compression on mnist5k (`benchmarks/bench_deep_compression.py`, = `deepshrink demo`)",
        "",
        f"Measured {machine()}. Whole demo (both baselines trained, pruned with retraining, shared, saved, reloaded,",
        f"evaluated): {total:.0f} s. Compressed size is the .dsz file on disk; accuracy is that of the model reloaded from",
        "it, on the 1,000 test digits. The paper's figures are on full MNIST (60k training images), so compare the ratio",
        "and the accuracy change against our own baseline.",
        "",
        "| network | original | compressed | ratio | test acc. before -> after | change | paper | paper ratio | paper error before -> after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["models"]:
        p = papers[r["name"]]
        change = 100 * (r["test_accuracy_after"] - r["test_accuracy_before"])
        lines.append(
            f"| {r['name']} | {r['original_bytes'] / 1000:.0f} KB | {r['compressed_bytes'] / 1000:.1f} KB | {r['ratio']:.1f}x | "
            f"{100 * r['test_accuracy_before']:.1f}% -> {100 * r['test_accuracy_after']:.1f}% | {change:+.1f} pt | "
            f"{p.paper_original_kb} KB -> {p.paper_compressed_kb} KB | {p.paper_ratio}x | {p.paper_error_before}% -> {p.paper_error_after}% |"
        )
    write_section("deep-compression", "\n".join(lines))


if __name__ == "__main__":
    main()
