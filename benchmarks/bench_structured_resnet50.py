"""ResNet-50 with 50% of its channels removed by L1: latency and .dsz size, beside Torch-Pruning used directly.

torchvision ResNet-50 architecture, random init (seed 0), input 1x3x224x224.
Three models in one process: the dense original, deepshrink's
``ChannelPruning(ratio=0.5, importance="l1")`` and Torch-Pruning's MetaPruner with
the same settings (L1 magnitude, 50% per layer, classifier kept). Latency: batch 1,
one thread, alternating rounds (deepshrink.analysis.compare_latency). Size: the
.dsz files on disk (the pruned ones rebuilt from the base factory + surgery log).

Run: .venv/bin/python benchmarks/bench_structured_resnet50.py
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import torch
import torch_pruning as tp

import deepshrink as ds
from deepshrink.analysis import compare_latency, total_macs

from _report import ROOT, machine, write_section

OUT = ROOT / "benchmarks" / "results" / "structured"


def main() -> None:
    torch.manual_seed(0)
    dense = ds.models.create("torchvision:resnet50")
    dense.eval()
    x = torch.randn(1, 3, 224, 224)
    ours = copy.deepcopy(dense)
    report = ds.prune_(ours, ds.ChannelPruning(ratio=0.5, importance="l1"), example_inputs=(x,))
    peer = copy.deepcopy(dense)
    pruner = tp.pruner.MetaPruner(peer, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
                                  ignored_layers=[peer.fc])
    pruner.step()
    with torch.no_grad():
        same_shapes = all(a.shape == b.shape for a, b in zip(ours.state_dict().values(), peer.state_dict().values()))
    timing = compare_latency({"dense": dense, "deepshrink": ours, "torch_pruning": peer}, (x,), rounds=9, repeats=5, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        dense_bytes = ds.save(dense, Path(tmp) / "dense.dsz").file_bytes
        ours_bytes = ds.save(ours, Path(tmp) / "ours.dsz").file_bytes
        again = ds.load(Path(tmp) / "ours.dsz")
        again.eval()
        with torch.no_grad():
            reload_equal = bool(torch.equal(again(x), ours(x)))
    results = {
        "machine": machine(),
        "params": {"dense": sum(p.numel() for p in dense.parameters()), "deepshrink": report.figures["params_after"],
                   "torch_pruning": sum(p.numel() for p in peer.parameters())},
        "macs": {"dense": total_macs(dense, (x,)), "deepshrink": total_macs(ours, (x,)), "torch_pruning": total_macs(peer, (x,))},
        "latency": timing,
        "dsz_bytes": {"dense": dense_bytes, "deepshrink": ours_bytes},
        "size_ratio": dense_bytes / ours_bytes,
        "same_architecture_as_torch_pruning": same_shapes,
        "reload_bit_exact": reload_equal,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "resnet50.json").write_text(json.dumps(results, indent=2))
    lat = timing
    md = f"""## Structured pruning: ResNet-50, 50% of channels by L1 (`benchmarks/bench_structured_resnet50.py`)

Measured {results['machine']}. torchvision ResNet-50 architecture (random init), batch 1, 1x3x224x224,
one thread, median of 9 alternating rounds of 5 runs. Torch-Pruning's MetaPruner used directly in the same run with the
same settings (L1, 50% per layer, classifier kept); both give the same architecture: {same_shapes}.
The pruned .dsz reloads from the base factory + surgery log with bit-identical outputs: {reload_equal}.

| model | parameters | MACs | median latency (ms) | speed-up | .dsz bytes | size ratio |
|---|---:|---:|---:|---:|---:|---:|
| dense | {results['params']['dense']:,} | {results['macs']['dense']:,} | {lat['dense']['median_ms']:.1f} | 1.00x | {dense_bytes:,} | 1.00x |
| deepshrink | {results['params']['deepshrink']:,} | {results['macs']['deepshrink']:,} | {lat['deepshrink']['median_ms']:.1f} | {lat['deepshrink']['speedup']:.2f}x | {ours_bytes:,} | {dense_bytes / ours_bytes:.2f}x |
| Torch-Pruning | {results['params']['torch_pruning']:,} | {results['macs']['torch_pruning']:,} | {lat['torch_pruning']['median_ms']:.1f} | {lat['torch_pruning']['speedup']:.2f}x | | |

Targets: at least 2.3x faster and 3x smaller.
"""
    write_section("structured-resnet50", md)
    print(md)


if __name__ == "__main__":
    main()
