"""Product quantization (Stock et al. 2019) on mnist5k classifiers and all-MiniLM-L6-v2, with the paper's comparison.

For each model, the same configuration (k=256, same block sizes, so the same
file size) is fitted two ways: EM on each layer's *output* (the paper) and
plain k-means on the *weights*. Both are measured before fine-tuning and after
the rest of the recipe (codebook fine-tuning distilled from the original, then
BatchNorm statistics for the classifiers; embedding matching for MiniLM).
Accuracy / cosine is that of the model reloaded from the .dsz file; size is the
file on disk. Hyperparameters live in recipes/pq.yaml and recipes/minilm-pq.yaml
(chosen on validation splits); the test splits and the held-out text
(benchmarks/results/heldout_sentences.txt) are only measured. MiniLM's cosine on
pydoc's validation split and the held-out text is printed after every
fine-tuning epoch; its quantized codebooks are cached, so fine-tuning variants
rerun without quantizing again.

    python benchmarks/bench_pq.py lenet5 resnet   # classifiers (baselines trained once, then cached)
    python benchmarks/bench_pq.py resnet-weight   # one model, one objective
    python benchmarks/bench_pq.py minilm           # MiniLM, both objectives (minilm-output, minilm-weight: one)
    python benchmarks/bench_pq.py report           # BENCHMARKS.md section from results/pq.json

The small ResNet is ``resnet_small`` at width 48 (2.8 MB fp32, the size of
LeNet-5): at the default width 8 (80 KB) a single 256-entry codebook per layer
is larger than the 20x budget for the whole model.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _report import machine, write_section

import deepshrink as ds
from deepshrink.commands.common import build_model, load_weights_into, save_weights
from deepshrink.recipe import Recipe, load_recipe, run_recipe
from deepshrink.train.callbacks import Callback
from deepshrink.train.defaults import default_train_config

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "pq.json"
CACHE = Path(os.environ.get("DEEPSHRINK_BENCH_CACHE", Path(tempfile.gettempdir()) / "deepshrink-bench-cache"))
CLASSIFIERS = {"lenet5": ("lenet5", {}), "resnet": ("resnet_small", {"width": 48})}


def _load() -> dict[str, Any]:
    return json.loads(OUT.read_text()) if OUT.is_file() else {"rows": []}


def _store(row: dict[str, Any]) -> None:
    data = _load()
    data["rows"] = [r for r in data["rows"] if (r["model"], r["objective"]) != (row["model"], row["objective"])] + [row]
    data["machine"] = machine()
    OUT.write_text(json.dumps(data, indent=2))
    print(json.dumps(row), flush=True)


def _baseline(spec: str, kwargs: dict[str, Any], bundle: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(spec, bundle) if not kwargs else ds.models.create(spec, **kwargs)
    cache = CACHE / f"{spec}{''.join(f'-{k}{v}' for k, v in kwargs.items())}.safetensors"
    if cache.is_file():
        load_weights_into(model, cache)
        return model
    ds.train(model, bundle, default_train_config(spec).replace(progress=False))
    CACHE.mkdir(parents=True, exist_ok=True)
    save_weights(model, cache)
    return model


def _with_objective(recipe: Recipe, objective: str) -> Recipe:
    stages = tuple(s if not isinstance(s.config, ds.ProductQuantization) else
                   type(s)(s.name, s.config.replace(objective=objective, progress=False), s.finetune) for s in recipe.stages)
    return Recipe(recipe.name, stages, recipe.description, recipe.distill)


def classifier(key: str, objectives: tuple[str, ...] = ("output", "weight")) -> None:
    spec, kwargs = CLASSIFIERS[key]
    bundle = ds.data.load("mnist5k")
    base = _baseline(spec, kwargs, bundle)
    before = ds.evaluate(base, bundle.test)["accuracy"]
    fp32 = sum(p.numel() for p in base.parameters()) * 4
    recipe = load_recipe("pq")
    for objective in objectives:
        model = copy.deepcopy(base)
        plan = _with_objective(recipe, objective)
        t = time.perf_counter()
        first = plan.stages[0]
        quantize_only = Recipe(plan.name, (type(first)(first.name, first.config, None),), plan.description, None)
        run_recipe(model, bundle, quantize_only)
        pq_seconds = time.perf_counter() - t
        after_pq = ds.evaluate(model, bundle.test)["accuracy"]
        rest = Recipe(plan.name, (type(first)("finetune", None, first.finetune), *plan.stages[1:]), plan.description, plan.distill)
        teacher = copy.deepcopy(base)
        # distill from the uncompressed model: run_recipe's teacher is the model as the recipe starts, so swap it in
        report = _finetune_from(model, teacher, bundle, rest)
        path = CACHE / f"{key}-pq-{objective}.dsz"
        CACHE.mkdir(parents=True, exist_ok=True)
        saved = ds.save(model, path)
        reloaded = ds.load(path)
        x = torch.stack([bundle.test[i][0] for i in range(64)])
        model.eval()
        exact = bool(torch.equal(reloaded(x), model(x)))
        _store({"model": key, "spec": spec, "kwargs": kwargs, "objective": objective, "fp32_bytes": fp32,
                "file_bytes": path.stat().st_size, "ratio": fp32 / path.stat().st_size, "baseline_test": before,
                "test_after_pq": after_pq, "test_after_finetune": ds.evaluate(reloaded, bundle.test)["accuracy"],
                "val_after_finetune": ds.evaluate(reloaded, bundle.val)["accuracy"], "outputs_equal_after_reload": exact,
                "pq_seconds": pq_seconds, "total_seconds": time.perf_counter() - t, "finetune": report,
                "codecs": sorted({r["codec"] for r in saved.tensors})})


def _finetune_from(model: torch.nn.Module, teacher: torch.nn.Module, bundle: Any, recipe: Recipe) -> dict[str, Any]:
    from deepshrink.distill.losses import distillation_objective
    from deepshrink.train.engine import finetune

    out: dict[str, Any] = {}
    for stage in recipe.stages:
        if stage.finetune is not None:
            assert recipe.distill is not None
            objective = distillation_objective(teacher, recipe.distill.temperature, recipe.distill.alpha)
            res = finetune(model, bundle, stage.finetune.replace(progress=False), objective=objective)
            out["steps"], out["seconds"] = res["steps"], res["seconds"]
        if stage.config is not None:
            ds.quantize_(model, stage.config, data=bundle)
    return out


HELDOUT = RESULTS / "heldout_sentences.txt"


class _EpochCosine(Callback):
    """After every fine-tuning epoch: cosine to the original on pydoc's validation split (and, for the record, the held-out text)."""

    def __init__(self, model: torch.nn.Module, base: torch.nn.Module, splits: dict[str, Any]) -> None:
        self.model, self.base, self.splits, self.rows = model, base, splits, []

    def on_epoch_end(self, state: Any) -> None:
        was = self.model.training
        row = {"epoch": state.epoch, **{k: ds.embedding_similarity(self.model, self.base, v)["cosine"] for k, v in self.splits.items()}}
        self.model.train(was)
        self.rows.append(row)
        print("  epoch", json.dumps(row), flush=True)


def _pq_state(model: torch.nn.Module) -> dict[str, Any]:
    return {name: {"codebook": p.codebook.detach().clone(), "codes": p.codes.clone(), "shape": p.shape, "storage": p.storage}
            for name, module in model.named_modules() if (p := ds.quantize.get_pq(module)) is not None}


def _restore_pq(model: torch.nn.Module, state: dict[str, Any], train_others: bool = False) -> None:
    """Re-install saved codebooks and codes (quantizing MiniLM takes minutes; fine-tuning variants reuse it)."""
    from torch.nn.utils import parametrize

    for name, module in model.named_modules():
        if name in state:
            s = state[name]
            parametrize.register_parametrization(module, "weight", ds.quantize.ProductQuantized(s["codebook"], s["codes"], s["shape"], s["storage"]), unsafe=True)
    codebooks = {id(ds.quantize.get_pq(m).codebook) for m in model.modules() if ds.quantize.get_pq(m) is not None}
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in codebooks or (train_others and not name.endswith("parametrizations.weight.original")))


def minilm(objectives: tuple[str, ...] = ("output", "weight"), recipe_name: str = "minilm-pq") -> None:
    """Quantize MiniLM on text:pydoc, fine-tune, and measure cosine on pydoc val/test and the held-out text after each step."""
    from deepshrink.distill.embedding import embedding_objective
    from deepshrink.train.engine import finetune

    base = ds.models.create("minilm")
    fp32 = sum(p.numel() for p in base.parameters()) * 4
    pydoc = ds.data.load("text:pydoc")
    held = ds.data.load(f"text:{HELDOUT}")
    recipe = load_recipe(recipe_name)
    for objective in objectives:
        plan = _with_objective(recipe, objective)
        first = plan.stages[0]
        model = copy.deepcopy(base)
        t = time.perf_counter()
        cached = CACHE / f"minilm-pq-{objective}-{_digest(first.config)}.pt"
        if cached.is_file():
            _restore_pq(model, torch.load(cached), first.config.train_others)
            pq_seconds = float("nan")
        else:
            report = ds.quantize_(model, first.config, data=pydoc)
            pq_seconds = time.perf_counter() - t
            CACHE.mkdir(parents=True, exist_ok=True)
            torch.save(_pq_state(model), cached)
            print(json.dumps({k: {"rel_err": round(v["relative_error"], 4), "d": v["block_size"]} for k, v in report.per_layer.items()}), flush=True)
        splits = {"pydoc_val": pydoc.val, "heldout_test": held.test}
        cos_pq = {k: ds.embedding_similarity(model, base, v)["cosine"] for k, v in splits.items()}
        print(objective, "after pq", json.dumps(cos_pq), f"{pq_seconds:.0f}s", flush=True)
        ref = copy.deepcopy(base)
        epochs = _EpochCosine(model, base, splits)
        res = finetune(model, pydoc, first.finetune.replace(progress=False), [epochs], objective=embedding_objective(ref))
        path = CACHE / f"minilm-pq-{objective}.dsz"
        ds.save(model, path)
        reloaded = ds.load(path)
        _store({"model": "minilm", "objective": objective, "config": ds.config_to_dict(first.config),
                "finetune_config": str(first.finetune), "fp32_bytes": fp32, "file_bytes": path.stat().st_size,
                "ratio": fp32 / path.stat().st_size, "cosine_after_pq": cos_pq, "cosine_per_epoch": epochs.rows,
                "cosine_after_finetune": {"pydoc_val": ds.embedding_similarity(reloaded, base, pydoc.val)["cosine"],
                                          "pydoc_test": ds.embedding_similarity(reloaded, base, pydoc.test)["cosine"],
                                          "heldout_test": ds.embedding_similarity(reloaded, base, held.test)["cosine"]},
                "sentences": {"pydoc_val": len(pydoc.val), "pydoc_test": len(pydoc.test), "heldout_test": len(held.test)},
                "pq_seconds": pq_seconds, "finetune_steps": res["steps"], "total_seconds": time.perf_counter() - t})


def _digest(cfg: Any) -> str:
    import hashlib

    return hashlib.sha1(repr(cfg.replace(progress=False)).encode()).hexdigest()[:10]


def report() -> None:
    data = _load()
    order = {"lenet5": 0, "resnet": 1, "minilm": 2}
    rows = sorted(data["rows"], key=lambda r: (order.get(r["model"], 3), r["objective"] != "output"))
    lines = [
        "## Product quantization (`benchmarks/bench_pq.py`, recipes `pq` and `minilm-pq`)",
        "",
        f"Measured {data.get('machine', machine())} (a 2-core machine shared with other jobs; no timings are compared).",
        "k = 256 centroids per layer, float16 codebooks, one byte per sub-vector (entropy coded when that is smaller).",
        "\"output\": EM on each layer's output error, layers fitted bottom-up on the activations of the quantized",
        "layers below (Stock et al. 2019); \"weight\": plain k-means on the weights, same blocks, same k, so about the",
        "same file size. Then codebook fine-tuning (classifiers: distilled from the uncompressed model, then BatchNorm",
        "statistics; MiniLM: matching the original's embeddings and token states on text:pydoc). Accuracy and cosine are",
        "those of the model reloaded from the .dsz file; size is the file on disk; fp32 = 4 bytes x parameters.",
        "",
        "**Classifiers on mnist5k** (1,000 test digits; baseline: `deepshrink train` defaults, seed 0).",
        "",
        "| model | objective | fp32 | .dsz | ratio | baseline test | after PQ | after fine-tuning |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["model"] != "minilm":
            name = "LeNet-5" if r["model"] == "lenet5" else "resnet_small (width 48)"
            lines.append(f"| {name} | {r['objective']} | {r['fp32_bytes']:,} B | {r['file_bytes']:,} B | {r['ratio']:.1f}x | "
                         f"{100 * r['baseline_test']:.1f}% | {100 * r['test_after_pq']:.1f}% | {100 * r['test_after_finetune']:.1f}% |")
    mini = [r for r in rows if r["model"] == "minilm"]
    if mini:
        lines += ["", "**all-MiniLM-L6-v2** fitted and fine-tuned on text:pydoc; mean cosine similarity to the original model's",
                  "embeddings on pydoc's validation split and on `benchmarks/results/heldout_sentences.txt` (test split: licence",
                  "texts and scikit-learn data set descriptions, English the model was not fitted on).", "",
                  "| objective | fp32 | .dsz | ratio | cosine after PQ (pydoc val / held-out) | after fine-tuning (pydoc val / held-out) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in mini:
            a, b = r["cosine_after_pq"], r["cosine_after_finetune"]
            lines.append(f"| {r['objective']} | {r['fp32_bytes']:,} B | {r['file_bytes']:,} B | {r['ratio']:.1f}x | "
                         f"{a['pydoc_val']:.3f} / {a['heldout_test']:.3f} | {b['pydoc_val']:.3f} / {b['heldout_test']:.3f} |")
    notes = data.get("notes", [])
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    write_section("pq", "\n".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    for arg in sys.argv[1:] or ["lenet5", "resnet", "minilm", "report"]:
        if arg in CLASSIFIERS:
            classifier(arg)
        elif arg.split("-")[0] in CLASSIFIERS and arg.split("-")[-1] in ("output", "weight"):
            classifier(arg.split("-")[0], (arg.split("-")[-1],))
        elif arg == "minilm":
            minilm(recipe_name=os.environ.get("PQ_RECIPE", "minilm-pq"))
        elif arg in ("minilm-output", "minilm-weight"):
            minilm((arg.split("-")[1],), recipe_name=os.environ.get("PQ_RECIPE", "minilm-pq"))
        elif arg == "report":
            report()
        else:
            raise SystemExit(f"unknown part {arg!r}: lenet5, resnet, minilm, minilm-output, minilm-weight, report")
