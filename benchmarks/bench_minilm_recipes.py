"""The three compressed all-MiniLM-L6-v2 recipes end to end, through the command line, on two kinds of held-out English.

For each recipe (minilm-prune, minilm-svd, minilm-pq) this runs exactly what a user runs:

    deepshrink compress --model minilm --data text:pydoc --recipe R --out F.dsz
    deepshrink eval F.dsz --data text:FILE --reference minilm --json

with FILE one of two held-out texts the recipe never sees: licence texts and scikit-learn's data-set
descriptions (benchmarks/results/heldout_sentences.txt, from heldout_text.py) and everyday English
(benchmarks/data/general_sentences.txt: news, cooking, travel, family life, written for this benchmark).
`deepshrink eval` measures a file's test split; the cosine over every sentence of each file (loading the
.dsz in Python) is recorded too. With ``--plain`` each recipe also runs without word-replacement
augmentation (its ``calibration`` entry removed and ``augment: none`` in its fine-tuning), in the same
run, so the effect of the augmentation is measured on the same machine. minilm-prune also gets its
CPU latency against the original (one thread, batch 1 of 20 tokens and batch 32, alternating rounds).

Run: .venv/bin/python benchmarks/bench_minilm_recipes.py [--plain] [RECIPE ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import ConcatDataset

import deepshrink as ds
from deepshrink.analysis import compare_latency
from deepshrink.recipe import RECIPE_DIR
from deepshrink.train.embeddings import embedding_similarity

from _report import ROOT, machine, write_section

BIN = Path(sys.executable).parent
OUT = ROOT / "benchmarks" / "results" / "minilm_recipes.json"
HELDOUT = {
    "licences+descr": ROOT / "benchmarks" / "results" / "heldout_sentences.txt",
    "everyday": ROOT / "benchmarks" / "data" / "general_sentences.txt",
}
RECIPES = ("minilm-prune", "minilm-svd", "minilm-pq")


def plain_recipe(name: str, folder: Path) -> Path:
    """The recipe without word-replacement augmentation (calibration on pydoc as is, plain fine-tuning batches)."""
    data = yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text())
    data.pop("calibration", None)
    for stage in data["stages"]:
        if "finetune" in stage:
            stage["finetune"]["augment"] = "none"
    data["name"] = f"{name} (no augmentation)"
    path = folder / f"{name}-plain.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str) -> str:
    res = subprocess.run([str(BIN / "deepshrink"), *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"deepshrink {' '.join(args)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return res.stdout


def run_one(recipe: str, recipe_arg: str, variant: str, folder: Path, reference: torch.nn.Module) -> dict:
    out = folder / f"{recipe}-{variant}.dsz"
    t0 = time.perf_counter()
    cli("compress", "--model", "minilm", "--data", "text:pydoc", "--recipe", recipe_arg, "--out", str(out))
    seconds = time.perf_counter() - t0
    row: dict = {"recipe": recipe, "variant": variant, "date": time.strftime("%Y-%m-%d"), "compress_seconds": seconds, "dsz_bytes": out.stat().st_size,
                 "fp32_bytes": 4 * sum(p.numel() for p in reference.parameters())}
    row["ratio"] = row["fp32_bytes"] / row["dsz_bytes"]
    recipe_file = Path(recipe_arg) if recipe_arg.endswith(".yaml") else RECIPE_DIR / f"{recipe_arg}.yaml"
    ft = [st["finetune"] for st in yaml.safe_load(recipe_file.read_text())["stages"] if "finetune" in st][-1]
    row["finetune"] = {"epochs": ft.get("epochs"), "lr": ft.get("lr"), "dropout": ft.get("dropout")}
    row["cli_eval"] = {"pydoc": json.loads(cli("eval", str(out), "--data", "text:pydoc", "--reference", "minilm", "--json").strip().splitlines()[-1])}
    loaded = ds.load(out).eval()
    row["params"] = sum(p.numel() for p in loaded.parameters())
    row["all_sentences"] = {}
    for label, path in HELDOUT.items():
        row["cli_eval"][label] = json.loads(cli("eval", str(out), "--data", f"text:{path}", "--reference", "minilm", "--json").strip().splitlines()[-1])
        d = ds.data.load(f"text:{path}")
        row["all_sentences"][label] = embedding_similarity(loaded, reference, ConcatDataset([d.train, d.val, d.test]))
    if recipe == "minilm-prune":
        one = reference.tokenize(["The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat."])
        d = ds.data.load(f"text:{HELDOUT['everyday']}")
        many = reference.tokenize([d.train[i] for i in range(32)])
        lat1 = compare_latency({"dense": reference, "pruned": loaded}, (one["input_ids"], one["attention_mask"]), rounds=9, repeats=10, threads=1)
        lat32 = compare_latency({"dense": reference, "pruned": loaded}, (many["input_ids"], many["attention_mask"]), rounds=5, repeats=3, threads=1)
        row["latency_ms"] = {"batch1": {k: v["median_ms"] for k, v in lat1.items()}, "batch32": {k: v["median_ms"] for k, v in lat32.items()}}
        row["speedup"] = {"batch1": lat1["pruned"]["speedup"], "batch32": lat32["pruned"]["speedup"]}
    print(json.dumps(row), flush=True)
    return row


def render(rows: list[dict]) -> str:
    lines = [
        "### all-MiniLM-L6-v2 recipes end to end, on English that is not Python's documentation (`benchmarks/bench_minilm_recipes.py`)",
        "",
        "`deepshrink compress --model minilm --data text:pydoc --recipe R --out F.dsz`, then `deepshrink eval F.dsz --data text:FILE "
        "--reference minilm` (the file's test split) and the cosine over all of the file's sentences. Held-out texts: licence texts "
        "and scikit-learn data-set descriptions (454 sentences), everyday English (195 sentences: news, food, travel, family). "
        "\"words\": the recipe as shipped (calibration on pydoc plus word-replaced copies, augmented fine-tuning batches; the three recipes "
        "since 2026-11-25 also with 3,000 sentences of general English from text:wiki-markov in the training split, "
        "`extra_text`, \"words, pydoc only\" being the same recipe before; since later that day fine-tuning batches hold "
        "sentences of similar length, TrainConfig.group_by_length, and the fine-tunes run twice the epochs in about the same time, "
        "\"words, random batches\" being the rows before); "
        "\"plain\": the recipe without augmentation (compare a plain row with the words row of the same fine-tune). \"words, uniform draws\": the recipe before replacement words were drawn more often the more frequent they are (text_augment.word_weights; it also replaced fewer words: 40% in 70% of sentences, calibration one copy at 50%). Target for all three: mean cosine >= 0.95 on held-out text. "
        "\"measured\": the day of each row's run (a run may re-measure some recipes only; each row ran the recipe as it was "
        "that day, its fine-tune in the \"fine-tune\" column: epochs, and whether the model's own dropout stayed on); compress "
        "seconds depend on what else ran.",
        "",
        "| recipe | variant | fine-tune | .dsz | vs fp32 | speed-up b1 / b32 | pydoc test | licences+descr test / all | everyday test / all | compress s | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(RECIPES)}
    for r in sorted(rows, key=lambda r: (order.get(r["recipe"], len(order)), r["variant"] != "words")):
        sp = f"{r['speedup']['batch1']:.2f}x / {r['speedup']['batch32']:.2f}x" if "speedup" in r else "-"
        c, a = r["cli_eval"], r["all_sentences"]
        ft = r.get("finetune", {})
        drop = "dropout off" if ft.get("dropout") == 0 else "dropout on" if ft.get("dropout") is None else f"dropout {ft['dropout']}"
        ft_text = f"{ft['epochs']} ep, {drop}" if ft else "-"
        lines.append(
            f"| {r['recipe']} | {r['variant']} | {ft_text} | {r['dsz_bytes'] / 1e6:.2f} MB | {r['ratio']:.1f}x smaller | {sp} | {c['pydoc']['cosine']:.3f} | "
            f"{c['licences+descr']['cosine']:.3f} / {a['licences+descr']['cosine']:.3f} | {c['everyday']['cosine']:.3f} / {a['everyday']['cosine']:.3f} | "
            f"{r['compress_seconds']:.0f} | {r.get('date', '-')} |"
        )
    lines += ["", f"Machine: {machine()}; results in `benchmarks/results/minilm_recipes.json`."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="*", default=list(RECIPES))
    parser.add_argument("--plain", action="store_true", help="also run each recipe without augmentation")
    parser.add_argument("--render", action="store_true", help="only rewrite the BENCHMARKS.md section from the saved results")
    args = parser.parse_args()
    torch.manual_seed(0)
    previous = json.loads(OUT.read_text())["rows"] if OUT.is_file() else []
    if args.render:
        args.recipes = []
    reference = ds.models.create("minilm").eval() if args.recipes else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for recipe in args.recipes:
            runs = [("words", recipe)] + ([("plain", str(plain_recipe(recipe, folder)))] if args.plain else [])
            for variant, arg in runs:
                row = run_one(recipe, arg, variant, folder, reference)
                previous = [r for r in previous if (r["recipe"], r["variant"]) != (recipe, variant)] + [row]
                OUT.parent.mkdir(parents=True, exist_ok=True)
                OUT.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d"), "rows": previous}, indent=1))
    order = {r: i for i, r in enumerate(RECIPES)}
    previous.sort(key=lambda r: (order.get(r["recipe"], 99), r["variant"] != "words"))
    write_section("minilm-recipes", render(previous))


if __name__ == "__main__":
    main()
