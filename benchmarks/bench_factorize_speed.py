"""Per-layer CPU speedup of Tucker-2, CP and Separable on the KxK convolutions of VGG-16 and ResNet-50.

Random-init torchvision architectures (latency does not depend on the weights' values). Each KxK
convolution is timed alone at batch 1 on its real input shape (a 224x224 image), one thread, against
its factored replacements at a 3x MAC reduction of that layer (the largest rank whose MACs, counted
by deepshrink.analysis, are at most a third of the layer's). Tucker-2 and Separable are fitted to the
weights (HOSVD / closed-form SVD); CP's four convolutions are timed at the chosen rank with unfitted
weights: the time of a convolution does not depend on its weights' values, and an ALS fit at ranks of
several hundred on 512x512x3x3 weights takes minutes and gigabytes per layer.
The contenders run in alternating rounds in one process, so background load hits them alike; the
figure per layer is the median over rounds.

    python benchmarks/bench_factorize_speed.py
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from _report import machine
from bench_factorize import render_section

import deepshrink as ds
from deepshrink.analysis import measure_latency, total_macs
from deepshrink.factorize.calibrate import layer_examples
from deepshrink.factorize.cp import CP_METHOD
from deepshrink.factorize.handler import method_for
from deepshrink.factorize.method import rank_at_most
from deepshrink.factorize.separable import fit_separable
from deepshrink.factorize.tucker import fit_tucker2

HERE = Path(__file__).parent
MODELS = [("VGG-16", "torchvision:vgg16"), ("ResNet-50", "torchvision:resnet50")]
ROUNDS = 5
REPEATS = 3
REDUCTION = 3.0
CP_SWEEPS = 25


def fitted(kind: str, conv: torch.nn.Conv2d, rank) -> torch.nn.Module:
    if kind == "tucker":
        return fit_tucker2(conv, tuple(rank), iterations=0)
    if kind == "separable":
        return fit_separable(conv, int(rank))
    return CP_METHOD.build(conv, int(rank))  # same layers as fit_cp builds, weights not fitted (see above)


def cp_fit_comparison() -> list[dict]:
    """deepshrink's CP-ALS against tensorly's ``parafac`` (same SVD start, same sweeps): time and relative error.

    Random-init ResNet-18 weights, small enough for tensorly's explicit Khatri-Rao product.
    """
    import numpy as np
    import tensorly as tl
    import torchvision
    from tensorly.decomposition import parafac

    from deepshrink.factorize.cp import cp_als

    torch.manual_seed(0)
    convs = [m for m in torchvision.models.resnet18(weights=None).modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    rows = []
    for conv, rank in ((convs[1], 64), (convs[8], 200)):
        w = conv.weight.detach().double()

        def rel(factors: list) -> float:
            return float((torch.einsum("nr,cr,yr,xr->ncyx", *factors) - w).norm() / w.norm())

        t = time.perf_counter()
        ours = cp_als(w, rank, CP_SWEEPS, tol=1e-12)
        row = {"shape": list(w.shape), "rank": rank, "sweeps": CP_SWEEPS, "ours_seconds": time.perf_counter() - t,
               "ours_error": rel(ours)}
        t = time.perf_counter()
        with tl.backend_context("numpy"):
            weights, mats = parafac(w.numpy(), rank, n_iter_max=CP_SWEEPS, init="svd", tol=1e-12, random_state=0)
        theirs = [torch.from_numpy(np.ascontiguousarray(m)) for m in mats]
        theirs[0] = theirs[0] * torch.from_numpy(np.asarray(weights))
        row.update(tensorly_seconds=time.perf_counter() - t, tensorly_error=rel(theirs))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    torch.set_num_threads(1)
    configs = {"tucker": ds.Tucker(ratio=0.5), "cp": ds.CP(ratio=0.5), "separable": ds.Separable(ratio=0.5)}
    results = []
    for label, spec in MODELS:
        torch.manual_seed(0)
        model = ds.models.create(spec).eval()
        convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)}
        examples = layer_examples(model, list(convs), (torch.rand(1, 3, 224, 224),))
        for name, conv in convs.items():
            x = examples[name]
            macs = total_macs(conv, (x,))
            row = {"model": label, "layer": name, "in_shape": list(x.shape), "out_channels": conv.out_channels,
                   "kernel": list(conv.kernel_size), "stride": list(conv.stride), "macs": macs}
            contenders = {"original": conv}
            for kind, cfg in configs.items():
                method = method_for(cfg)
                rank = rank_at_most(method, conv, macs / REDUCTION, "macs", x)
                t = time.perf_counter()
                with torch.no_grad():
                    module = fitted(kind, conv, rank).eval()
                row[kind] = {"rank": list(rank) if isinstance(rank, tuple) else rank, "macs": total_macs(module, (x,)),
                             "fit_seconds": time.perf_counter() - t}
                contenders[kind] = module
            times: dict[str, list[float]] = {k: [] for k in contenders}
            for _ in range(ROUNDS):
                for kind, module in contenders.items():
                    times[kind].append(measure_latency(module, (x,), repeats=REPEATS, warmup=1, threads=1)["median_ms"])
            row["latency_ms"] = {k: statistics.median(v) for k, v in times.items()}
            for kind in configs:
                row[kind]["speedup"] = row["latency_ms"]["original"] / row["latency_ms"][kind]
                row[kind]["mac_reduction"] = macs / row[kind]["macs"]
            results.append(row)
            print(json.dumps({"layer": f"{label} {name}", "ms": row["latency_ms"]}), flush=True)
    out = HERE / "results" / "factorize_speed.json"
    out.write_text(json.dumps({"machine": machine(), "rounds": ROUNDS, "repeats": REPEATS, "reduction": REDUCTION,
                               "rows": results, "cp_fit": cp_fit_comparison()}, indent=2))
    render_section()


if __name__ == "__main__":
    main()
