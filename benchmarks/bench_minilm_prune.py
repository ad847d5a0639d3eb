"""all-MiniLM-L6-v2 with heads and FFN neurons removed (`recipes/minilm-prune.yaml`): speed and cosine on held-out text.

The same steps as ``deepshrink compress --model minilm --data text:pydoc --recipe minilm-prune --out F.dsz``
followed by ``deepshrink eval F.dsz --data text:FILE --reference minilm``: the recipe runs on text:pydoc
(fitted on its training split, fine-tuned by matching the original's embeddings), the .dsz is saved and
loaded back, and the loaded model is compared with the original on pydoc's test split and on other
English text (benchmarks/results/heldout_sentences.txt, from benchmarks/heldout_text.py: licence texts
and scikit-learn's data-set descriptions). Latency: batch 1 (one sentence of 20 tokens) and a batch of
32 held-out sentences, one thread, alternating rounds.

Run: .venv/bin/python benchmarks/bench_minilm_prune.py [RECIPE]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset

import deepshrink as ds
from deepshrink.analysis import compare_latency
from deepshrink.train.embeddings import embedding_similarity

from _report import ROOT, machine, write_section

OUT = ROOT / "benchmarks" / "results" / "structured" / "minilm_prune.json"
HELDOUT = ROOT / "benchmarks" / "results" / "heldout_sentences.txt"


def main(recipe: str) -> None:
    torch.manual_seed(0)
    data = ds.data.load("text:pydoc")
    other = ds.data.load(f"text:{HELDOUT}")
    held = ConcatDataset([other.train, other.val, other.test])
    reference = ds.models.create("minilm").eval()
    model = ds.models.create("minilm")
    result = ds.run_recipe(model, data, recipe, example_inputs=ds.models.example_inputs(model, data), train_overrides={"progress": False})
    with tempfile.TemporaryDirectory() as tmp:
        saved = ds.save(model, Path(tmp) / "minilm-prune.dsz")
        loaded = ds.load(Path(tmp) / "minilm-prune.dsz").eval()
    dense_bytes = 4 * sum(p.numel() for p in reference.parameters())
    cos_test = embedding_similarity(loaded, reference, data.test)
    cos_held = embedding_similarity(loaded, reference, held)
    one = reference.tokenize(["The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat."])
    many = reference.tokenize([held[i] for i in range(32)])
    lat1 = compare_latency({"dense": reference, "pruned": loaded}, (one["input_ids"], one["attention_mask"]), rounds=9, repeats=10, threads=1)
    lat32 = compare_latency({"dense": reference, "pruned": loaded}, (many["input_ids"], many["attention_mask"]), rounds=5, repeats=3, threads=1)
    first = result.stages[0]
    results = {
        "machine": machine(),
        "recipe": recipe,
        "stages": [{k: v for k, v in s.items() if k != "report"} for s in result.stages],
        "prune_figures": {k: v for k, v in first.get("report", {}).get("figures", {}).items() if k != "steps"},
        "params": {"dense": sum(p.numel() for p in reference.parameters()), "pruned": sum(p.numel() for p in loaded.parameters())},
        "dsz_bytes": saved.file_bytes, "fp32_bytes": dense_bytes,
        "cosine_pydoc_test": cos_test, "cosine_heldout": cos_held,
        "latency_batch1": lat1, "latency_batch32": lat32,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, default=str))
    md = f"""## MiniLM: heads and FFN neurons removed (`benchmarks/bench_minilm_prune.py`, recipe `{recipe}`)

Measured {results['machine']}. all-MiniLM-L6-v2, recipe fitted on text:pydoc's training split (fine-tuned by matching
the original's embeddings and token states), saved as .dsz and loaded back; cosine similarity of the loaded model's
sentence embeddings to the original's. Held-out text: {len(held)} sentences of other English prose
(licence texts and scikit-learn data-set descriptions, `benchmarks/heldout_text.py`). Latency: one thread, alternating rounds.

| | dense | pruned |
|---|---:|---:|
| parameters | {results['params']['dense']:,} | {results['params']['pruned']:,} |
| .dsz bytes | | {saved.file_bytes:,} |
| latency, 1 sentence of {one['input_ids'].shape[1]} tokens (ms) | {lat1['dense']['median_ms']:.1f} | {lat1['pruned']['median_ms']:.1f} ({lat1['pruned']['speedup']:.2f}x) |
| latency, 32 held-out sentences (ms) | {lat32['dense']['median_ms']:.0f} | {lat32['pruned']['median_ms']:.0f} ({lat32['pruned']['speedup']:.2f}x) |
| mean cosine, pydoc test split ({int(cos_test['count'])}) | 1 | {cos_test['cosine']:.4f} (min {cos_test['cosine_min']:.3f}) |
| mean cosine, held-out other text ({int(cos_held['count'])}) | 1 | {cos_held['cosine']:.4f} (min {cos_held['cosine_min']:.3f}) |

Validation cosine after each stage: {', '.join(f"{s['name']}: {s.get('val', {}).get('cosine', float('nan')):.4f}" for s in result.stages)}.
Targets: at least 2x faster, mean cosine at least 0.95 on held-out text.
"""
    write_section("minilm-prune", md)
    print(md)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "minilm-prune")
