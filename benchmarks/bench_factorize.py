"""Low-rank factorization of LeNet-300-100 and LeNet-5 on mnist5k: 3x fewer parameters, accuracy kept.

For each model: train the baseline with the project's default settings (seed 0), or reuse the one
cached in benchmarks/.cache/; run the factorization recipes (ranks chosen per layer from the
measured validation loss, then fine-tuning), save to .dsz, reload, and evaluate the reloaded model
on the test split. LeNet-300-100 runs the `svd` recipe; LeNet-5 runs the stages of `tucker` (or
`cp`) for its convolutions followed by those of `svd` for its Linear layers.

    python benchmarks/bench_factorize.py
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _report import machine, write_section

import deepshrink as ds
from deepshrink.commands.common import build_model, load_weights_into, save_weights
from deepshrink.recipe import Recipe, load_recipe, run_recipe
from deepshrink.train.defaults import default_train_config

HERE = Path(__file__).parent
CACHE = HERE / ".cache" / "baselines"
RUNS = [
    ("LeNet-300-100", "lenet300", ["svd"]),
    ("LeNet-5", "lenet5", ["tucker", "svd"]),
    ("LeNet-5", "lenet5", ["cp", "svd"]),
]


def baseline(spec: str, data: ds.data.DataBundle) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(spec, data)
    path = CACHE / f"{spec}.safetensors"
    if path.is_file():
        load_weights_into(model, path)
        return model
    ds.train(model, data, default_train_config(spec).replace(progress=False, seed=0))
    save_weights(model, path)
    return model


def combined(names: list[str]) -> Recipe:
    recipes = [load_recipe(n) for n in names]
    return Recipe(name="+".join(names), stages=tuple(s for r in recipes for s in r.stages),
                  description="; ".join(r.description for r in recipes), distill=recipes[0].distill)


def main() -> None:
    torch.set_num_threads(2)
    data = ds.data.load("mnist5k")
    rows = []
    for label, spec, names in RUNS:
        model = baseline(spec, data)
        before = ds.evaluate(model, data.test)["accuracy"]
        params_before = sum(p.numel() for p in model.parameters())
        recipe = combined(names)
        t = time.perf_counter()
        report = run_recipe(model, data, recipe, example_inputs=ds.models.example_inputs(model, data),
                            train_overrides={"progress": False})
        seconds = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{spec}.dsz"
            ds.save(model, path)
            reloaded = ds.load(path)
            dsz_bytes = path.stat().st_size
        after = ds.evaluate(reloaded, data.test)["accuracy"]
        params_after = sum(p.numel() for p in reloaded.parameters())
        ranks = {n: r["rank"] for s in report.stages if "report" in s for n, r in s["report"]["per_layer"].items()}
        val_after = report.stages[-1]["val"]["accuracy"]
        rows.append({
            "model": label, "spec": spec, "recipes": names, "params_before": params_before, "params_after": params_after,
            "param_reduction": params_before / params_after, "test_accuracy_before": before, "test_accuracy_after": after,
            "val_accuracy_after": val_after, "change_points": 100 * (after - before), "dsz_bytes": dsz_bytes,
            "ranks": ranks, "seconds": seconds,
            "stages": [{k: v for k, v in s.items() if k != "report"} for s in report.stages],
        })
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "stages"}), flush=True)
    out = HERE / "results" / "factorize.json"
    out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2, default=str))
    render_section()


def _lenet_lines(res: dict) -> list[str]:
    lines = [
        "### LeNet on mnist5k: 3x fewer parameters (`benchmarks/bench_factorize.py`)",
        "",
        f"Measured {res['machine']}. Baselines trained with the default settings (seed 0); ranks per layer from",
        "each layer's measured validation loss (several ranks per layer, greedy allocation to 32% of the factored",
        "layers' parameters), then the recipe's fine-tuning (distilled from the original). Accuracy of the model",
        "reloaded from its .dsz, on the 1,000 test digits.",
        "",
        "| model | recipes | params | reduction | test acc. before -> after | change | ranks |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        ranks = ", ".join(f"{k}: {v}" for k, v in r["ranks"].items())
        lines.append(
            f"| {r['model']} | {' + '.join(r['recipes'])} | {r['params_before']:,} -> {r['params_after']:,} | "
            f"{r['param_reduction']:.2f}x | {100 * r['test_accuracy_before']:.1f}% -> {100 * r['test_accuracy_after']:.1f}% | "
            f"{r['change_points']:+.1f} pt | {ranks} |")
    return lines


def _speed_lines(res: dict) -> list[str]:
    kinds = ("tucker", "cp", "separable")
    lines = [
        "### Per-layer CPU speedup at 3x fewer MACs (`benchmarks/bench_factorize_speed.py`)",
        "",
        f"Measured {res['machine']}; timed with 1 thread. Random-init torchvision VGG-16 and ResNet-50; each KxK",
        "convolution alone at batch 1 on its real input shape (224x224 image), against its replacement at the",
        "largest rank with at most a third of the layer's MACs. Median of "
        f"{res['rounds']} alternating rounds of {res['repeats']} runs each. Speedup = original time / factored time.",
        "",
    ]
    for model in dict.fromkeys(r["model"] for r in res["rows"]):
        rows = [r for r in res["rows"] if r["model"] == model]
        total = {k: sum(r["latency_ms"][k] for r in rows) for k in ("original", *kinds)}
        lines += [f"**{model}**: all {len(rows)} KxK convolutions together: "
                  + ", ".join(f"{k} {total['original'] / total[k]:.2f}x" for k in kinds)
                  + f" faster (original {total['original']:.0f} ms); median per-layer speedup: "
                  + ", ".join(f"{k} {statistics.median(r[k]['speedup'] for r in rows):.2f}x" for k in kinds) + ".", "",
                  "| layer | input | MMACs | original ms | Tucker-2 ranks / speedup | CP rank / speedup | Separable rank / speedup |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            shape = "x".join(str(d) for d in r["in_shape"][1:])
            cells = []
            for k in kinds:
                rank = r[k]["rank"]
                rank = "/".join(map(str, rank)) if isinstance(rank, list) else str(rank)
                cells.append(f"{rank} / {r[k]['speedup']:.2f}x")
            lines.append(f"| {r['layer']} | {shape} | {r['macs'] / 1e6:.0f} | {r['latency_ms']['original']:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _minilm_lines(res: dict) -> list[str]:
    return res.get("markdown", [])


def render_section() -> None:
    """The `factorize` section of BENCHMARKS.md from whichever results files exist."""
    parts = ["## Low rank and compact filters (`deepshrink.factorize_`)", ""]
    results = HERE / "results"
    for fname, render in (("factorize.json", _lenet_lines), ("factorize_speed.json", _speed_lines),
                          ("factorize_minilm.json", _minilm_lines)):
        path = results / fname
        if path.is_file():
            parts += render(json.loads(path.read_text())) + [""]
    write_section("factorize", "\n".join(parts))


if __name__ == "__main__":
    main()
