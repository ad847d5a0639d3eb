"""all-MiniLM-L6-v2 with low-rank Linear layers (`recipes/minilm-svd.yaml`): cosine to the original, before and after fine-tuning.

Runs the recipe on `text:pydoc` (whitened SVD of the encoder's Linear layers to 50% of their
parameters, ranks from each layer's measured sensitivity, then fine-tuning that matches the
original's embeddings), saving the model both right after factorization and after fine-tuning.
Both files are evaluated with the command line, as a user would:
`deepshrink eval F.dsz --data text:FILE --reference minilm`, on held-out English text that the model
was not fitted on (licence texts and scikit-learn data-set descriptions, benchmarks/heldout_text.py)
and on the test split of `text:pydoc`.

    python benchmarks/bench_factorize_minilm.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _report import machine
from bench_factorize import render_section

import deepshrink as ds

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
HELDOUT = HERE / "results" / "heldout_sentences.txt"


class SaveBeforeFinetune(ds.Callback):
    """Writes the model as it is when fine-tuning starts (just after factorization)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_begin(self, state: ds.TrainState) -> None:
        ds.save(state.model, self.path)


def cli_eval(path: Path, data: str) -> dict:
    res = subprocess.run([str(BIN / "deepshrink"), "eval", str(path), "--data", data, "--reference", "minilm", "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    if not HELDOUT.is_file():
        subprocess.run([sys.executable, str(HERE / "heldout_text.py")], check=True)
    data = ds.data.load("text:pydoc")
    model = ds.models.create("minilm")
    def params(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    def linear(m: torch.nn.Module) -> int:  # the encoder's Linear layers, factored ones counted by their two parts
        return sum(p.numel() for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)
                   and n.startswith("encoder.encoder.layer.") for p in mod.parameters(recurse=False))

    before_params, before_linear = params(model), linear(model)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        f0, f1 = Path(tmp) / "factored.dsz", Path(tmp) / "finetuned.dsz"
        t = time.perf_counter()
        report = ds.run_recipe(model, data, "minilm-svd", example_inputs=ds.models.example_inputs(model, data),
                               callbacks=[SaveBeforeFinetune(f0)], train_overrides={"progress": False})
        seconds = time.perf_counter() - t
        ds.save(model, f1, meta={"recipe": "minilm-svd", "data": "text:pydoc"})
        stage = report.stages[0]["report"]
        for label, path in (("after factorization", f0), ("after fine-tuning", f1)):
            rows[label] = {"heldout": cli_eval(path, f"text:{HELDOUT}"), "pydoc": cli_eval(path, "text:pydoc"),
                           "dsz_bytes": path.stat().st_size}
            print(label, json.dumps(rows[label]), flush=True)
    factored = {n: r["rank"] for n, r in stage["per_layer"].items()}
    after_linear = linear(model)
    kept_whole = list(stage["skipped"])
    markdown = [
        "### all-MiniLM-L6-v2, Linear layers at 50% of their parameters (`benchmarks/bench_factorize_minilm.py`)",
        "",
        f"Measured {machine()}. Recipe `minilm-svd` fitted on `text:pydoc` (whitened SVD, ranks from each layer's",
        "measured loss of cosine to the original on the validation sentences, then fine-tuning on the 788 training",
        "sentences matching the original's embeddings and token states). Cosine similarity to the original",
        "sentence embeddings from `deepshrink eval F.dsz --data text:FILE --reference minilm`; held-out text is",
        "English prose that is not Python's documentation (benchmarks/heldout_text.py, its test split).",
        "",
        f"Encoder Linear layers: {before_linear:,} -> {after_linear:,} parameters ({after_linear / before_linear:.1%};"
        f" {len(factored)} factored, {len(kept_whole)} kept whole); whole model"
        f" {before_params:,} -> {params(model):,}. Run time {seconds:.0f} s.",
        "",
        "| model | mean cosine, held-out text | min cosine, held-out | mean cosine, pydoc test | .dsz bytes |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in rows.items():
        markdown.append(f"| {label} | {r['heldout']['cosine']:.4f} | {r['heldout']['cosine_min']:.4f} | "
                        f"{r['pydoc']['cosine']:.4f} | {r['dsz_bytes']:,} |")
    out = {"machine": machine(), "seconds": seconds, "params_before": before_params, "params_after": params(model),
           "linear_params_before": before_linear, "linear_params_after": after_linear, "ranks": factored, "kept_whole": kept_whole, "rows": rows,
           "stage_figures": {k: v for k, v in stage["figures"].items() if k != "sensitivity"},
           "sensitivity": stage["figures"].get("sensitivity"), "markdown": markdown, "recipe_val": report.stages[0].get("val")}
    (HERE / "results" / "factorize_minilm.json").write_text(json.dumps(out, indent=2, default=str))
    render_section()


if __name__ == "__main__":
    main()
