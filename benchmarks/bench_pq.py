"""Product quantization (Stock et al. 2019) on mnist5k classifiers and all-MiniLM-L6-v2, with the paper's comparison.

For each model, the same configuration (k=256, same block sizes, so the same
file size) is fitted two ways: EM on each layer's *output* (the paper) and
plain k-means on the *weights*. Both are measured before fine-tuning and after
the rest of the recipe (codebook fine-tuning distilled from the original, then
BatchNorm statistics for the classifiers; embedding matching for MiniLM).
Accuracy / cosine is that of the model reloaded from the .dsz file; size is the
file on disk. Hyperparameters were fixed beforehand (recipes/pq.yaml,
recipes/minilm-pq.yaml); the test split is only measured.

    python benchmarks/bench_pq.py lenet5 resnet   # classifiers (baselines trained once, then cached)
    python benchmarks/bench_pq.py minilm           # MiniLM, both objectives
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
from deepshrink.data.text import _is_prose, _split_sentences
from deepshrink.recipe import Recipe, load_recipe, run_recipe
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


def classifier(key: str) -> None:
    spec, kwargs = CLASSIFIERS[key]
    bundle = ds.data.load("mnist5k")
    base = _baseline(spec, kwargs, bundle)
    before = ds.evaluate(base, bundle.test)["accuracy"]
    fp32 = sum(p.numel() for p in base.parameters()) * 4
    recipe = load_recipe("pq")
    for objective in ("output", "weight"):
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


def english_file() -> Path:
    """Sentences of scikit-learn's data set descriptions: English text other than pydoc, shipped offline."""
    import sklearn.datasets

    descr = Path(sklearn.datasets.__file__).parent / "descr"
    sentences: list[str] = []
    for f in sorted(descr.glob("*.rst")):
        text = " ".join(line.strip() for line in f.read_text().splitlines() if line.strip() and not line.startswith((" ", "..", ":", "=", "-", "*")))
        for s in _split_sentences(text):
            s = " ".join(s.split())
            if s and _is_prose(s) and s not in sentences:
                sentences.append(s)
    path = CACHE / "sklearn_descr_sentences.txt"
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sentences) + "\n")
    return path


def minilm(objectives: tuple[str, ...] = ("output", "weight")) -> None:
    base = ds.models.create("minilm")
    fp32 = sum(p.numel() for p in base.parameters()) * 4
    pydoc = ds.data.load("text:pydoc")
    other = ds.data.load(f"text:{english_file()}")
    recipe = load_recipe("minilm-pq")
    for objective in objectives:
        model = copy.deepcopy(base)
        plan = _with_objective(recipe, objective)
        first = plan.stages[0]
        t = time.perf_counter()
        run_recipe(model, pydoc, Recipe(plan.name, (type(first)(first.name, first.config, None),), "", None))
        pq_seconds = time.perf_counter() - t
        cos_pq = {"pydoc_test": ds.embedding_similarity(model, base, pydoc.test)["cosine"],
                  "sklearn_descr": ds.embedding_similarity(model, base, other.test)["cosine"]}
        # fine-tune against the original model (run_recipe on text data matches the model as it starts: the original)
        ref = copy.deepcopy(base)
        from deepshrink.distill.embedding import embedding_objective
        from deepshrink.train.engine import finetune

        res = finetune(model, pydoc, first.finetune.replace(progress=False), objective=embedding_objective(ref))
        path = CACHE / f"minilm-pq-{objective}.dsz"
        ds.save(model, path)
        reloaded = ds.load(path)
        _store({"model": "minilm", "objective": objective, "fp32_bytes": fp32, "file_bytes": path.stat().st_size,
                "ratio": fp32 / path.stat().st_size, "cosine_after_pq": cos_pq,
                "cosine_after_finetune": {"pydoc_test": ds.embedding_similarity(reloaded, base, pydoc.test)["cosine"],
                                          "sklearn_descr": ds.embedding_similarity(reloaded, base, other.test)["cosine"]},
                "held_out_sentences": {"pydoc_test": len(pydoc.test), "sklearn_descr": len(other.test)},
                "pq_seconds": pq_seconds, "finetune_steps": res["steps"], "total_seconds": time.perf_counter() - t})


def report() -> None:
    rows = _load()["rows"]
    lines = [
        "## Product quantization (`benchmarks/bench_pq.py`, recipes `pq` and `minilm-pq`)",
        "",
        f"Measured {_load().get('machine', machine())}. k = 256 centroids per layer, float16 codebooks, one byte per",
        "sub-vector. \"output\": EM on each layer's output error, layers fitted bottom-up on the activations of the",
        "quantized layers below (Stock et al. 2019); \"weight\": plain k-means on the weights, same blocks, same k, so",
        "the same file size. Then codebook fine-tuning (classifiers: distilled from the uncompressed model, then",
        "BatchNorm statistics; MiniLM: matching the original's embeddings on text:pydoc). Accuracy and cosine are those",
        "of the model reloaded from the .dsz file (test split / held-out sentences); size is the file on disk.",
        "",
        "| model | objective | fp32 | .dsz | ratio | baseline | after PQ | after fine-tuning |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["model"] == "minilm":
            a, b = r["cosine_after_pq"], r["cosine_after_finetune"]
            lines.append(f"| all-MiniLM-L6-v2 | {r['objective']} | {r['fp32_bytes'] / 1e6:.1f} MB | {r['file_bytes'] / 1e6:.2f} MB | "
                         f"{r['ratio']:.1f}x | cosine 1 | pydoc {a['pydoc_test']:.3f}, sklearn {a['sklearn_descr']:.3f} | "
                         f"pydoc {b['pydoc_test']:.3f}, sklearn {b['sklearn_descr']:.3f} |")
        else:
            name = "LeNet-5" if r["model"] == "lenet5" else "resnet_small (width 48)"
            lines.append(f"| {name} | {r['objective']} | {r['fp32_bytes'] / 1e3:.0f} KB | {r['file_bytes'] / 1e3:.1f} KB | "
                         f"{r['ratio']:.1f}x | {100 * r['baseline_test']:.1f}% | {100 * r['test_after_pq']:.1f}% | "
                         f"{100 * r['test_after_finetune']:.1f}% |")
    lines += ["", "MiniLM cosine: mean cosine similarity to the original model's embeddings on pydoc's held-out test",
              "sentences and on sentences of scikit-learn's data set descriptions (English text it was not fitted on)."]
    write_section("pq", "\n".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    for arg in sys.argv[1:] or ["lenet5", "resnet", "minilm", "report"]:
        if arg in CLASSIFIERS:
            classifier(arg)
        elif arg == "minilm":
            minilm()
        elif arg == "minilm-output":
            minilm(("output",))
        elif arg == "report":
            report()
        else:
            raise SystemExit(f"unknown part {arg!r}: lenet5, resnet, minilm, minilm-output, report")
