"""Sparse inference on the CPU: a 4096x4096 Linear at 95% sparsity, batch 1, and whole models after to_sparse_.

Part 1, one layer: dense ``F.linear`` against torch's own sparse kernels (CSR ``torch.mm`` with int64
and int32 indices, ``torch.sparse.mm``, ``torch.addmm``) and deepshrink's ``SparseLinear`` (numba SELL-16
kernel), all on the same weight and input, in alternating rounds in one process; the figure is the
median over rounds of dense time / contender time. Run with torch's default threads and with one.

Part 2, models: LeNet-300-100 pruned to 50/90/95/98% and a 4096-4096-4096 MLP at 95%, dense against
the same model after ``deepshrink.to_sparse_`` (per-layer choice by measurement), batch 1, alternating
rounds; outputs compared with allclose.

Writes benchmarks/results/sparse_inference.json and the `sparse-inference` section of BENCHMARKS.md.

    python benchmarks/bench_sparse_inference.py
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import deepshrink as ds
from deepshrink.sparse import SparseLinear, compare_speed
from _report import machine, write_section

RESULTS = Path(__file__).parent / "results" / "sparse_inference.json"
ROUNDS = 15


def one_layer(threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    n = 4096
    weight = torch.randn(n, n) * (torch.rand(n, n) >= 0.95)
    x = torch.randn(1, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        csr64 = weight.to_sparse_csr()
        csr32 = torch.sparse_csr_tensor(csr64.crow_indices().int(), csr64.col_indices().int(), csr64.values(), size=(n, n))
    layer = nn.Linear(n, n, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    ours = SparseLinear.from_dense(layer)
    xt = x.t().contiguous()
    zeros = torch.zeros(n, 1)
    contenders = {
        "torch CSR mm (int64)": lambda: torch.mm(csr64, xt),
        "torch CSR mm (int32)": lambda: torch.mm(csr32, xt),
        "torch.sparse.mm (int32)": lambda: torch.sparse.mm(csr32, xt),
        "torch.addmm CSR (int32)": lambda: torch.addmm(zeros, csr32, xt),
        "deepshrink SparseLinear": lambda: ours(x),
    }
    dense = lambda: F.linear(x, weight)  # noqa: E731
    with torch.inference_mode():
        ref = dense()
        assert torch.allclose(ours(x), ref, atol=1e-4)
        assert torch.allclose(torch.mm(csr32, xt).t(), ref, atol=1e-4)
        rows = {}
        for name, fn in contenders.items():
            rows[name] = compare_speed(dense, fn, rounds=ROUNDS, min_seconds=0.02)
    return {"threads": threads, "nnz": int((weight != 0).sum()), "rows": rows}


def mlp(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(nn.Flatten(), *layers[:-1])


def whole_model(name: str, model: nn.Module, sparsity: float, x: torch.Tensor) -> dict:
    ds.prune_(model, ds.MagnitudePruning(sparsity=sparsity))
    ds.prune.fold_masks(model)
    model.eval()
    import copy

    sparse_model = copy.deepcopy(model)
    report = ds.to_sparse_(sparse_model, (x,))
    with torch.inference_mode():
        ok = torch.allclose(sparse_model(x), model(x), atol=1e-4)
        timing = compare_speed(lambda: model(x), lambda: sparse_model(x), rounds=ROUNDS, min_seconds=0.02)
    return {"model": name, "sparsity": sparsity, "sparse_layers": report.changed,
            "candidates": int(report.figures["candidates"]), "allclose": ok, **timing,
            "per_layer": report.per_layer}


def main() -> None:
    t0 = time.perf_counter()
    default_threads = torch.get_num_threads()
    layer_runs = [one_layer(default_threads), one_layer(1)]
    torch.set_num_threads(default_threads)
    torch.manual_seed(0)
    models = [whole_model(f"lenet300 pruned {int(100 * s)}%", ds.models.create("lenet300"), s, torch.rand(1, 1, 28, 28))
              for s in (0.5, 0.9, 0.95, 0.98)]
    torch.manual_seed(0)
    models.append(whole_model("MLP 4096x3 pruned 95%", mlp(4096, 3), 0.95, torch.randn(1, 4096)))
    RESULTS.write_text(json.dumps({"machine": machine(), "one_layer": layer_runs, "models": models,
                                   "seconds": round(time.perf_counter() - t0, 1)}, indent=2) + "\n")
    lines = [
        "## Sparse inference on the CPU (`benchmarks/bench_sparse_inference.py`)",
        "",
        f"Measured {machine()} (shared with other jobs). Batch 1. Speed-up = median over {ROUNDS} alternating",
        "rounds of (dense time / sparse time), measured in the same process on the same weight and input.",
        "",
        "One 4096x4096 Linear at 95% sparsity (838,861 nonzeros), against dense `F.linear`:",
        "",
        "| contender | threads | sparse (ms) | dense (ms) | speed-up vs dense |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in layer_runs:
        for name, r in run["rows"].items():
            lines.append(f"| {name} | {run['threads']} | {r['sparse_ms']:.3f} | {r['dense_ms']:.3f} | {r['speedup']:.2f}x |")
    lines += [
        "",
        "`SparseLinear` stores the nonzeros in SELL-16 form (rows sorted by length, 16 rows advance together,",
        "16-bit column indices) and runs a single-threaded numba kernel; see `src/deepshrink/sparse/kernels.py`.",
        "",
        "Whole models, dense against `deepshrink.to_sparse_` (per-layer choice by measurement, min speed-up 1.1):",
        "",
        "| model | layers made sparse | dense (ms) | after to_sparse_ (ms) | speed-up | outputs allclose |",
        "|---|---|---:|---:|---:|---|",
    ]
    for m in models:
        chosen = ", ".join(m["sparse_layers"]) or "none"
        lines.append(f"| {m['model']} | {chosen} (of {m['candidates']}) | {m['dense_ms']:.3f} | {m['sparse_ms']:.3f} | "
                     f"{m['speedup']:.2f}x | {m['allclose']} |")
    lines += ["", "A model with no layer made sparse is the dense model itself: its ratio shows the measurement noise.", "Raw figures: `benchmarks/results/sparse_inference.json`."]
    write_section("sparse-inference", "\n".join(lines))


if __name__ == "__main__":
    main()
