"""Which verb works on which architecture: every compression verb on torchvision and Hugging Face models.

Each cell applies one verb to a randomly initialised model (small inputs, so the
run stays short), checks that the result runs and keeps its output shape and
finite values, saves it to .dsz and loads it back onto a fresh base model, and
compares the outputs (bit-exact expected). A cell is "ok", "refused" (the verb
declined with deepshrink's own error, naming why and what to do instead; the
model is untouched) or "FAIL" (anything else: a bug). Results go to
``benchmarks/results/verb_matrix.json`` and the ``verb-matrix`` section of
BENCHMARKS.md. Not run by CI.

With ``--timm`` the same verbs run over families of timm's registry that torchvision does not have
(built with ``deepshrink.models.create("timm:NAME")``, so a file also reloads from its recorded spec
alone); results go to ``benchmarks/results/timm_matrix.json`` and the ``timm-matrix`` section.

Run: ``.venv/bin/python benchmarks/bench_verb_matrix.py [--only resnet18 bert] [--timm]``
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, write_section  # noqa: E402

import deepshrink as ds  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "verb_matrix.json"
TIMM_RESULTS = ROOT / "benchmarks" / "results" / "timm_matrix.json"


def _vision(name: str, **kw: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(num_classes=10, **kw)
    return make


def _small_vit() -> nn.Module:
    import torchvision

    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
                                                mlp_dim=128, num_classes=10)


def _text(kind: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import transformers

        small = dict(vocab_size=500)
        if kind == "bert":
            return transformers.BertModel(transformers.BertConfig(**small, hidden_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, intermediate_size=128), add_pooling_layer=False)
        if kind == "distilbert":
            return transformers.DistilBertModel(transformers.DistilBertConfig(**small, dim=64, n_layers=2, n_heads=4,
                                                hidden_dim=128))
        if kind == "roberta":
            return transformers.RobertaModel(transformers.RobertaConfig(**small, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=128), add_pooling_layer=False)
        return transformers.GPT2Model(transformers.GPT2Config(**small, n_embd=64, n_layer=2, n_head=4))
    return make


# name -> (factory, kind of example inputs)
MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "resnet18": (_vision("resnet18"), "image32"),
    "resnext50_32x4d": (_vision("resnext50_32x4d"), "image32"),
    "mobilenet_v2": (_vision("mobilenet_v2"), "image32"),
    "mobilenet_v3_small": (_vision("mobilenet_v3_small"), "image32"),
    "efficientnet_b0": (_vision("efficientnet_b0"), "image32"),
    "shufflenet_v2_x0_5": (_vision("shufflenet_v2_x0_5"), "image32"),
    "squeezenet1_1": (_vision("squeezenet1_1"), "image32"),
    "densenet121": (_vision("densenet121"), "image32"),
    "regnet_x_400mf": (_vision("regnet_x_400mf"), "image32"),
    "mnasnet0_5": (_vision("mnasnet0_5"), "image32"),
    "convnext_tiny": (_vision("convnext_tiny"), "image32"),
    "googlenet": (_vision("googlenet", aux_logits=False, init_weights=True), "image64"),
    "vit (2 layers, 32 px)": (_small_vit, "image32"),
    "swin_t": (_vision("swin_t"), "image64"),
    "bert (HF, 2 layers)": (_text("bert"), "tokens"),
    "distilbert (HF, 2 layers)": (_text("distilbert"), "tokens"),
    "roberta (HF, 2 layers)": (_text("roberta"), "tokens"),
    "gpt2 (HF, 2 layers)": (_text("gpt2"), "ids"),
}


def _timm(name: str, **kw: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return ds.models.create(f"timm:{name}", num_classes=10, **kw)
    return make


# timm families torchvision lacks (attention hybrids, re-parameterised, CSP, dual-path, multi-branch, NF, MLP).
# Inputs of 32 px unless a model's own layout needs more; ViT-like models are built for that size (img_size).
TIMM_MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "resnet10t": (_timm("resnet10t"), "image32"),
    "seresnext26d_32x4d": (_timm("seresnext26d_32x4d"), "image32"),
    "skresnet18": (_timm("skresnet18"), "image32"),
    "res2net50_14w_8s": (_timm("res2net50_14w_8s"), "image32"),
    "resnest14d": (_timm("resnest14d"), "image32"),
    "cspresnet50": (_timm("cspresnet50"), "image32"),
    "dla34": (_timm("dla34"), "image32"),
    "dpn68": (_timm("dpn68"), "image32"),
    "nf_resnet26": (_timm("nf_resnet26"), "image32"),
    "repvgg_a0": (_timm("repvgg_a0"), "image32"),
    "mobileone_s0": (_timm("mobileone_s0"), "image32"),
    "fastvit_t8": (_timm("fastvit_t8"), "image32"),
    "hrnet_w18_small": (_timm("hrnet_w18_small"), "image64"),
    "efficientnet_b0 (timm)": (_timm("efficientnet_b0"), "image32"),
    "mobilenetv4_conv_small": (_timm("mobilenetv4_conv_small"), "image32"),
    "ghostnet_050": (_timm("ghostnet_050"), "image32"),
    "rexnet_100": (_timm("rexnet_100"), "image32"),
    "lcnet_050": (_timm("lcnet_050"), "image32"),
    "hgnetv2_b0": (_timm("hgnetv2_b0"), "image32"),
    "repvit_m1": (_timm("repvit_m1"), "image32"),
    "fasternet_t0": (_timm("fasternet_t0"), "image32"),
    "starnet_s1": (_timm("starnet_s1"), "image32"),
    "convnextv2_atto": (_timm("convnextv2_atto"), "image32"),
    "edgenext_xx_small": (_timm("edgenext_xx_small"), "image32"),
    "poolformer_s12": (_timm("poolformer_s12"), "image32"),
    "mobilevit_xxs": (_timm("mobilevit_xxs"), "image32"),
    "efficientvit_b0": (_timm("efficientvit_b0"), "image32"),
    "levit_128s": (_timm("levit_128s", img_size=32), "image32"),
    "tiny_vit_5m_224": (_timm("tiny_vit_5m_224"), "image32"),
    "deit_tiny_patch16_224": (_timm("deit_tiny_patch16_224", img_size=32), "image32"),
    "eva02_tiny_patch14_224": (_timm("eva02_tiny_patch14_224", img_size=28), "image28"),
    "pit_ti_224": (_timm("pit_ti_224", img_size=32), "image32"),
    "xcit_nano_12_p16_224": (_timm("xcit_nano_12_p16_224", img_size=32), "image32"),
    "coat_lite_tiny": (_timm("coat_lite_tiny", img_size=32), "image32"),
    "pvt_v2_b0": (_timm("pvt_v2_b0"), "image32"),
    "mixer_s16_224": (_timm("mixer_s16_224", img_size=32), "image32"),
    "botnet26t_256": (_timm("botnet26t_256", img_size=64), "image64"),
}


def _inputs(kind: str) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    if kind.startswith("image"):
        side = int(kind[5:])
        return (torch.randn(2, 3, side, side, generator=g),)
    ids = torch.randint(5, 500, (2, 12), generator=g)
    if kind == "ids":
        return (ids,)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask


VERBS: dict[str, Callable[[nn.Module, tuple[Tensor, ...]], Any]] = {
    "channels (L1)": lambda m, x: ds.prune_(m, ds.ChannelPruning(ratio=0.3, importance="l1", measure_latency=False),
                                            example_inputs=x),
    "magnitude": lambda m, x: ds.prune_(m, ds.MagnitudePruning(sparsity=0.7)),
    "svd": lambda m, x: ds.factorize_(m, ds.SVD(ratio=0.5, latency=False), example_inputs=x),
    "tucker": lambda m, x: ds.factorize_(m, ds.Tucker(ratio=0.5, latency=False), example_inputs=x),
    "int8 static": lambda m, x: ds.quantize_(m, ds.Int8(activations="static"), calibration=[x] * 2),
    "int8 dynamic": lambda m, x: ds.quantize_(m, ds.Int8(activations="dynamic"), example_inputs=x),
    "pq": lambda m, x: _pq(m, x),
    "k-means 4 bit": lambda m, x: ds.share_(m, ds.KMeansSharing(bits=4)),
    "ternary": lambda m, x: ds.quantize_(m, ds.TernaryWeights()),
    "channels (FPGM, global)": lambda m, x: ds.prune_(m, ds.ChannelPruning(ratio=0.3, importance="fpgm", scope="global",
                                                                          measure_latency=False), example_inputs=x),
    "svd + embeddings": lambda m, x: ds.factorize_(m, ds.SVD(ratio=0.5, embeddings=True, latency=False), example_inputs=x),
    "cp": lambda m, x: ds.factorize_(m, ds.CP(ratio=0.5, iterations=10, latency=False), example_inputs=x),
    "separable": lambda m, x: ds.factorize_(m, ds.Separable(ratio=0.5, latency=False), example_inputs=x),
    "depthwise separable": lambda m, x: ds.factorize_(m, ds.DepthwiseSeparable(ratio=0.5, latency=False), example_inputs=x),
    "fire": lambda m, x: ds.factorize_(m, ds.Fire(ratio=0.5, latency=False), example_inputs=x),
    "qat8 + convert": lambda m, x: _qat(m, x, 8),
    "qat4 + convert": lambda m, x: _qat(m, x, 4),
    "binary (XNOR) + convert": lambda m, x: _low_bit(m, ds.BinaryWeights()),
    "binaryconnect + convert": lambda m, x: _low_bit(m, ds.BinaryWeights(method="binaryconnect")),
}


def _qat(model: nn.Module, x: tuple[Tensor, ...], bits: int) -> Any:
    """Fake-quantize, take one training step (so observers and weights move), then convert to the integer model."""
    ds.quantize_(model, ds.QAT(bits=bits), example_inputs=x)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    _first(model(*x)).float().pow(2).mean().backward()
    opt.step()
    model.eval()
    return ds.quantize_(model, ds.Convert())


def _low_bit(model: nn.Module, config: Any) -> Any:
    ds.quantize_(model, config)
    return ds.quantize_(model, ds.Convert())
def _pq(model: nn.Module, x: tuple[Tensor, ...]) -> Any:
    if x[0].is_floating_point():  # images: the output objective on these inputs
        return ds.quantize_(model, ds.ProductQuantization(k=16, n_iter=2, samples=8, progress=False), data=x[0])
    # token ids: calibration text needs a tokenizer, which these bare models lack; k-means on the weights
    return ds.quantize_(model, ds.ProductQuantization(k=16, n_iter=2, objective="weight", progress=False))


CONV_ONLY = ("tucker", "cp", "separable", "depthwise separable", "fire")
TEXT_SKIP = {**{v: "no convolutions" for v in CONV_ONLY}, "int8 static": "text models: use int8 dynamic"}
TABLE_WIDTH = 9  # verbs per table, so that each stays readable


def _first(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, dict):
        return next(v for v in out.values() if isinstance(v, Tensor))
    return next(v for v in out if isinstance(v, Tensor))


def run_cell(factory: Callable[[], nn.Module], x: tuple[Tensor, ...], verb: Callable[..., Any], tmp: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    try:
        base = factory().eval()
        model = copy.deepcopy(base)
        with torch.no_grad():
            want_shape = tuple(_first(base(*x)).shape)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built or run is a failing cell, not a crash
        return {"status": "FAIL", "reason": f"building or running the base model: {type(exc).__name__}: {str(exc)[:200]}"}
    t0 = time.perf_counter()
    try:
        verb(model, x)
    except ds.DeepshrinkError as exc:
        untouched = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
        return {"status": "refused", "reason": f"{type(exc).__name__}: {str(exc)[:240]}", "untouched": untouched}
    except Exception as exc:  # noqa: BLE001 - every other failure is what this matrix is for
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return {"status": "FAIL", "reason": f"{type(exc).__name__}: {str(exc)[:240]} ({Path(frame.filename).name}:{frame.lineno})"}
    try:
        model.eval()
        with torch.no_grad():
            got = _first(model(*x))
        if tuple(got.shape) != want_shape or not bool(torch.isfinite(got).all()):
            return {"status": "FAIL", "reason": f"output {tuple(got.shape)} (want {want_shape}) or not finite"}
        path = tmp / "cell.dsz"
        ds.save(model, path)
        again = ds.load(path, model=factory())
        with torch.no_grad():
            same = torch.equal(_first(again(*x)), got)
        if same and ds.surgery.model_spec(base) is not None:
            # A model built from a factory spec reloads from the file alone (spec + surgery log).
            alone = ds.load(path)
            with torch.no_grad():
                same = torch.equal(_first(alone(*x)), got)
        return {"status": "ok" if same else "FAIL", "reason": "" if same else "loaded outputs differ",
                "dsz_bytes": path.stat().st_size, "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as exc:  # noqa: BLE001
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return {"status": "FAIL", "reason": f"{type(exc).__name__}: {str(exc)[:240]} ({Path(frame.filename).name}:{frame.lineno})"}


def render(rows: dict[str, dict[str, dict[str, Any]]], timm: bool = False) -> str:
    verbs = [v for v in VERBS if any(v in cells for cells in rows.values())]
    title = ("### Which verb works on which timm architecture (`benchmarks/bench_verb_matrix.py --timm`)" if timm
             else "### Which verb works on which architecture (`benchmarks/bench_verb_matrix.py`)")
    lines = [title, "",
             f"Measured {machine()}. Every verb on randomly initialised models with small inputs: the result must run "
             "with the same output shape and finite values, and its .dsz must load back onto a fresh base model with "
             "bit-identical outputs. ok: all of that holds; refused: the verb declined with deepshrink's own error "
             "(reason below; the model untouched); FAIL: anything else; -: not applicable."
             + (" timm models are built with `deepshrink.models.create(\"timm:NAME\", num_classes=10)` and each file also "
                "reloads from its recorded spec and surgery log alone, bit-exactly. Channel pruning checks its own "
                "result (the pruned model computes what the original does with the removed channels zeroed, where "
                "that is the same thing) and keeps whole any group whose removal Torch-Pruning mis-maps." if timm else "")]
    notes: list[str] = []
    for start in range(0, len(verbs), TABLE_WIDTH):
        group = verbs[start:start + TABLE_WIDTH]
        lines += ["", "| model | " + " | ".join(group) + " |", "|---|" + "---|" * len(group)]
        for model, cells in rows.items():
            marks = []
            for v in group:
                c = cells.get(v)
                if c is None:
                    marks.append("-")
                    continue
                marks.append(c["status"])
                if c["status"] != "ok":
                    notes.append(f"- {model}, {v}: {c['status']}: {c['reason']}")
            lines.append(f"| {model} | " + " | ".join(marks) + " |")
    if notes:
        lines += ["", *notes]
    fails = sum(c["status"] == "FAIL" for cells in rows.values() for c in cells.values())
    lines += ["", f"{fails} failing cells of {sum(len(c) for c in rows.values())}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="model names (prefixes) to run")
    parser.add_argument("--verbs", nargs="*", default=None, help="verb names to run (default: all)")
    parser.add_argument("--timm", action="store_true", help="run the timm zoo instead (section timm-matrix)")
    parser.add_argument("--merge", action="store_true",
                        help="with --only/--verbs: re-measure those cells into the saved results and BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    zoo, results, section = (TIMM_MODELS, TIMM_RESULTS, "timm-matrix") if args.timm else (MODELS, RESULTS, "verb-matrix")
    partial = bool(args.only or args.verbs)
    if partial and not args.merge:
        rows: dict[str, dict[str, dict[str, Any]]] = {}
    else:  # every model's cells are written as soon as they are measured: a long run can stop and go on
        rows = json.loads(results.read_text())["rows"] if partial and results.exists() else {}
    with tempfile.TemporaryDirectory() as d:
        for name, (factory, kind) in zoo.items():
            if args.only and not any(name.startswith(o) for o in args.only):
                continue
            x = _inputs(kind)
            cells: dict[str, dict[str, Any]] = {}
            for verb_name, verb in VERBS.items():
                if kind in ("tokens", "ids") and verb_name in TEXT_SKIP:
                    continue
                if args.verbs and verb_name not in args.verbs:
                    continue
                cell = run_cell(factory, x, verb, Path(d))
                cells[verb_name] = cell
                print(f"{name:26s} {verb_name:14s} {cell['status']} {cell.get('reason', '')[:160]}", flush=True)
            rows.setdefault(name, {}).update(cells)
            if args.merge or not partial:
                _save(results, section, {n: rows[n] for n in zoo if n in rows}, args.timm)
    if partial and not args.merge:
        print(render(rows))


def _save(results: Path, section: str, rows: dict[str, dict[str, dict[str, Any]]], timm: bool) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    write_section(section, render(rows, timm=timm))

if __name__ == "__main__":
    main()
