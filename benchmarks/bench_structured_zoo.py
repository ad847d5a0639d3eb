"""Structured pruning over every torchvision classifier: zeroed channels vs removed channels.

For each model of ``torchvision.models.list_models(module=torchvision.models)``
(random init, 10 classes, batch-norm statistics randomised): prune 50% of the
channels by L1 with deepshrink's ChannelPruning, zero the same channels in the
original, and compare outputs (``deepshrink.prune.verify.removal_equivalence``).
Writes ``benchmarks/results/structured/zoo.json`` and the table of section
``structured-zoo`` in BENCHMARKS.md (the README links to it).

Run: .venv/bin/python benchmarks/bench_structured_zoo.py [NAME ...]
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

import deepshrink as ds
from deepshrink.prune.verify import removal_equivalence

from _report import ROOT, machine, write_section

OUT = ROOT / "benchmarks" / "results" / "structured" / "zoo.json"
# Models whose architecture fixes the input size, or needs a larger one than the default.
INPUT_SIZE = {"vit": 224, "swin": 224, "maxvit": 224, "inception_v3": 96, "googlenet": 64}
TOLERANCE = 1e-4  # relative to the largest output magnitude


def input_size(name: str) -> int:
    for prefix, size in INPUT_SIZE.items():
        if name.startswith(prefix):
            return size
    return 64


def randomize_norms(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def zoo_model(name: str) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    """Torchvision's ``name`` for the zoo checks (seed 0, 10 classes, randomised batch-norm statistics), a batch of
    two inputs of its size, and the start of its result row."""
    torch.manual_seed(0)
    kwargs = {"num_classes": 10}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    model = ds.models.create(f"torchvision:{name}", **kwargs)
    randomize_norms(model)
    size = input_size(name)
    x = torch.randn(2, 3, size, size)
    return model, x, {"model": name, "input": size, "params": sum(p.numel() for p in model.parameters())}


def check(name: str) -> dict:
    t0 = time.perf_counter()
    model, x, row = zoo_model(name)
    try:
        res = removal_equivalence(model, ds.ChannelPruning(ratio=0.5, importance="l1", measure_latency=False), (x,))
        row.update(ok=res["max_rel_diff"] < TOLERANCE, max_rel_diff=res["max_rel_diff"], param_fraction=res["param_fraction"],
                   skipped=sorted(set(res["report"].skipped.values())))
        if not row["ok"]:
            row["why"] = f"outputs differ (relative {res['max_rel_diff']:.2e})"
    except Exception as exc:  # noqa: BLE001 -- a benchmark records every failure and goes on
        row.update(ok=False, why=f"{type(exc).__name__}: {(str(exc).splitlines() or ['(no message)'])[0][:200]}", trace=traceback.format_exc()[-2000:])
    row["seconds"] = time.perf_counter() - t0
    return row


MODEL_SECONDS = 900  # a model whose check has not finished by then is recorded as such and the run goes on


MODEL_MEMORY = 12 * 2**30  # bytes of data a check may allocate: some traces grow without bound (swin_t)


def _check_into(fn: Callable[[str], dict], name: str, queue: multiprocessing.Queue) -> None:
    import resource

    # A MemoryError in the child is recorded as that model's failure instead of the whole machine swapping.
    resource.setrlimit(resource.RLIMIT_DATA, (MODEL_MEMORY, MODEL_MEMORY))
    queue.put(fn(name))


def check_with_limit(name: str, fn: Callable[[str], dict] | None = None) -> dict:
    """``fn(name)`` (default :func:`check`) in a child process, given up after MODEL_SECONDS (some models trace for hours on 2 cores)."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    child = multiprocessing.Process(target=_check_into, args=(fn or check, name, queue))
    t0 = time.perf_counter()
    child.start()
    child.join(MODEL_SECONDS)
    if child.is_alive():
        child.kill()
        child.join()
        return {"model": name, "ok": False, "why": f"not finished within {MODEL_SECONDS} s on this machine", "seconds": time.perf_counter() - t0}
    if queue.empty():
        return {"model": name, "ok": False, "why": f"the check process died (exit {child.exitcode})"}
    return queue.get()


# Too large to build and trace in this benchmark's time on a 2-core machine (hundreds of millions of parameters).
TOO_LARGE = {"regnet_y_128gf", "vit_h_14", "regnet_y_32gf", "vit_l_16", "vit_l_32", "regnet_y_16gf"}


def run_zoo(names: list[str], out: Path, fn: Callable[[str], dict], describe: Callable[[dict], str]) -> list[dict]:
    """``fn`` over every torchvision classifier (or ``names``), each in a limited child process; the rows, by model name.

    Resumable: rows already in ``out`` (an earlier, interrupted run) are kept; results are written after every model.
    """
    names = names or sorted(torchvision.models.list_models(module=torchvision.models))
    done = {r["model"]: r for r in json.loads(out.read_text())["rows"]} if out.exists() else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in done:
            continue
        if name in TOO_LARGE:
            row = {"model": name, "ok": None, "why": "not run: too large for this benchmark's time budget on 2 cores"}
        else:
            row = check_with_limit(name, fn)
        done[name] = row
        print(f"{name:<24} ok={row['ok']} {describe(row)} {row.get('seconds', 0):.1f}s {row.get('why', '')}", flush=True)
        out.write_text(json.dumps({"machine": machine(), "rows": [done[k] for k in sorted(done)]}, indent=2))
    return [done[k] for k in sorted(done)]


def main(names: list[str]) -> None:
    rows = run_zoo(names, OUT, check, lambda row: f"{row.get('param_fraction', 0):.2f}")
    ok = [r for r in rows if r["ok"]]
    run = [r for r in rows if r["ok"] is not None]
    lines = [
        "## Structured pruning over the torchvision zoo (`benchmarks/bench_structured_zoo.py`)",
        "",
        f"Measured {machine()}. Every classifier of torchvision {torchvision.__version__.split('+')[0]} (random init, 10 classes),",
        "50% of channels by L1; the pruned model's outputs must equal the original's with the same channels zeroed",
        f"(relative tolerance {TOLERANCE}). {len(ok)} of the {len(run)} models run pass ({len(rows) - len(run)} not run: too large).",
        "",
        "| model | params kept | note |",
        "|---|---:|---|",
    ]
    for r in rows:
        note = r.get("why", "") if not r["ok"] else "; ".join(r.get("skipped", []))[:160]
        kept = f"{r['param_fraction']:.2f}" if "param_fraction" in r else "-"
        status = "ok" if r["ok"] else ("not run" if r["ok"] is None else "FAIL")
        lines.append(f"| {r['model']} {status} | {kept} | {note} |")
    write_section("structured-zoo", "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
