"""Product quantization: EM never increases its objective, the output objective wins on outputs,
bottom-up fitting, codebook-only fine-tuning, and exact save/load through the ``pq`` codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepshrink as ds
from deepshrink.codec.pq_codec import PQCodec
from deepshrink.codec.tensor_codecs import decode_bits, encode_bits
from deepshrink.errors import ConfigError, FormatError
from deepshrink.quantize import BatchNormStats, ProductQuantization, fold_pq, get_pq, pq_codebooks, pq_em, pq_objective
from deepshrink.quantize.pq_calibrate import Calibration, calibration_batches
from deepshrink.quantize.pq_em import blocks_to_flat, weight_blocks
from deepshrink.recipe import load_recipe


def _cfg(**kw) -> ProductQuantization:
    return ProductQuantization(**{"k": 16, "n_iter": 15, "samples": 64, "progress": False, **kw})


class _Mixed(nn.Module):
    """Conv (plain and grouped), 1x1 conv, BN, linear: every PQ layer kind but the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, padding_mode="reflect")
        self.point = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16 * 4 * 4, 24)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = F.max_pool2d(F.relu(self.point(F.relu(self.grouped(x)))), 2)
        return self.head(F.relu(self.fc(x.flatten(1))))


def _mixed() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return _Mixed().eval(), torch.randn(80, 4, 8, 8)


# ----------------------------------------------------------------------------- EM


@pytest.mark.parametrize("metric", ["output", "weight", "weighted rows"])
def test_em_objective_never_increases(metric: str) -> None:
    gen = torch.Generator().manual_seed(1)
    P, N, d = 4, 200, 4
    blocks = torch.randn(P, N, d, generator=gen, dtype=torch.float64)
    grams, weights = None, None
    if metric == "output":
        x = torch.randn(P, 200, d, generator=gen, dtype=torch.float64) @ torch.randn(P, d, d, generator=gen, dtype=torch.float64)
        grams = x.transpose(1, 2) @ x
    if metric == "weighted rows":
        weights = torch.rand(N, generator=gen, dtype=torch.float64) * 10 + 0.1
    result = pq_em(blocks, grams, k=24, n_iter=25, weights=weights, seed=3)
    hist = result.history
    assert len(hist) >= 5
    for before, after in zip(hist, hist[1:]):
        assert after <= before * (1 + 1e-12)
    assert hist[-1] < 0.7 * hist[0]
    # the last value is the objective of exactly the codebook and codes returned
    direct = pq_objective(blocks, grams, result.codebook, result.codes, weights=weights)
    assert direct == pytest.approx(hist[-1], rel=1e-9)


def test_em_recovers_exact_clusters_and_layout_round_trips() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 8, (3, 50), generator=gen)
    result = pq_em(centres[labels], None, k=8, n_iter=50)
    assert result.history[-1] == pytest.approx(0.0, abs=1e-9)
    # layout: flat sub-vector i of a (out, in) weight is elements i*d .. i*d+d-1
    w = torch.arange(48.0).reshape(4, 3, 2, 2)  # conv, 2 groups of 2 outputs, rows of 12
    blocks = weight_blocks(w, 3, groups=2)
    assert blocks.shape == (8, 2, 3)
    ids = torch.arange(16).reshape(8, 2)
    flat = blocks_to_flat(ids, groups=2)
    assert torch.equal(blocks.reshape(16, 3)[flat], w.reshape(16, 3))


def test_output_objective_beats_weight_objective_on_held_out_outputs() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(32, 48)
    mix = torch.randn(32, 32) * torch.logspace(0, -2, 32)  # strongly anisotropic inputs
    train, held_out = torch.randn(400, 32) @ mix, torch.randn(400, 32) @ mix
    errors = {}
    for objective in ("output", "weight"):
        q = nn.Linear(32, 48)
        q.load_state_dict(layer.state_dict())
        ds.quantize_(q, _cfg(block_size=4, objective=objective, n_iter=30, samples=400), data=train)
        errors[objective] = float(((q(held_out) - layer(held_out)) ** 2).sum().detach())
    assert errors["output"] < 0.9 * errors["weight"]


# ----------------------------------------------------------------------------- the verb


def test_every_layer_kind_holds_k_subvectors_and_only_codebooks_train() -> None:
    model, x = _mixed()
    report = ds.quantize_(model, _cfg(block_size={"conv": 9, "pointwise": 4, "linear": 8}), data=x)
    assert report.changed == ["conv.weight", "grouped.weight", "point.weight", "fc.weight"]
    assert "only 15 sub-vectors" in report.skipped["head.weight"]
    for name, (codebook, codes) in pq_codebooks(model).items():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        d = report.per_layer[name]["block_size"]
        assert codes.dtype == torch.uint8 and codebook.shape == (16, d)
        w = module.weight.detach()
        # the effective weight is codebook[codes], each run of d elements, with float16 values
        assert torch.equal(w.reshape(-1, d), codebook.half().float()[codes.long()])
        assert report.per_layer[name]["objective"] == "output"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.parametrizations.weight.0.codebook" for n in ("conv", "grouped", "point", "fc")}


def test_fine_tuning_moves_codebooks_only() -> None:
    model, x = _mixed()
    ds.quantize_(model, _cfg(), data=x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(x), torch.randint(0, 5, (80,))).backward()
    opt.step()
    after = model.state_dict()
    for key, value in before.items():
        moved = not torch.equal(value, after[key])
        if key.endswith("codebook"):
            assert moved, key
        elif not key.startswith("bn.running") and key != "bn.num_batches_tracked":
            assert not moved, key  # codes, biases, originals and BN affine stay put


def test_train_others_keeps_uncompressed_parameters_trainable_but_not_the_replaced_weights() -> None:
    model, x = _mixed()
    ds.quantize_(model, _cfg(train_others=True), data=x)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"fc.bias", "bn.weight", "bn.bias", "conv.bias"} <= trainable
    assert "fc.parametrizations.weight.0.codebook" in trainable
    # the original weights behind a codebook never train: they are not what the file stores
    assert not any(n.endswith("parametrizations.weight.original") for n in trainable)


def test_layers_are_fitted_bottom_up_on_quantized_activations() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(64, 8)
    reference = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    reference.load_state_dict(model.state_dict())
    cfg = _cfg(block_size=4, k=8, samples=64)
    ds.quantize_(model, cfg, data=x)
    # refit layer 2 by hand on the activations that the *quantized* layer 1 produces
    h = torch.relu(model[0](x)).detach().double()
    cols = h.reshape(64, 4, 4).permute(1, 2, 0)
    grams = cols @ cols.transpose(1, 2)
    expected = pq_em(weight_blocks(reference[2].weight.detach().double(), 4), grams, k=8, n_iter=cfg.n_iter, seed=cfg.seed)
    assert torch.allclose(get_pq(model[2]).codebook.detach(), expected.codebook.float(), atol=1e-6)


def test_layers_reading_one_input_form_one_group() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), -1)
            return self.o(a @ self.v(x))

    m = Attn()
    cal = Calibration(m, calibration_batches(m, torch.randn(4, 3, 8), 4, 4, 0))
    groups = cal.plan([m.o, m.v, m.k, m.q])
    assert [[id(x) for x in g] for g in groups] == [[id(m.q), id(m.k), id(m.v)], [id(m.o)]]


def test_weight_objective_needs_no_data_and_bad_configs_are_refused() -> None:
    model, _ = _mixed()
    with pytest.raises(ConfigError, match="data"):
        ds.quantize_(model, _cfg())
    report = ds.quantize_(model, _cfg(objective="weight", block_size={"linear": 5, "conv": 9}))
    assert report.per_layer["fc.weight"]["block_size"] == 4  # 5 does not divide rows of 256: the largest smaller divisor
    odd = nn.Linear(7, 300)
    assert "no block size from 2 to 4 divides the row length 7" in ds.quantize_(odd, _cfg(objective="weight")).skipped["weight"]
    for bad in ({"k": 1}, {"k": 257}, {"block_size": 0}, {"objective": "kl"}, {"codebook_dtype": "int8"}, {"block_size": {"linear": "4"}}):
        with pytest.raises(ConfigError):
            ProductQuantization(**bad)
    again = ds.config_from_yaml(ds.config_to_yaml(ProductQuantization(block_size={"conv": 18}, k=64)))
    assert again == ProductQuantization(block_size={"conv": 18}, k=64)


def test_embedding_rows_weighted_by_token_frequency() -> None:
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(400, 8)
            self.fc = nn.Linear(8, 2)

        def tokenize(self, sentences: list[str]) -> dict[str, torch.Tensor]:
            ids = [[int(w) for w in s.split()] for s in sentences]
            width = max(map(len, ids))
            return {"input_ids": torch.tensor([r + [399] * (width - len(r)) for r in ids]),
                    "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])}

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.fc((self.emb(ids) * mask[..., None]).sum(1))

    torch.manual_seed(0)
    model = Bag()
    original = model.emb.weight.detach().clone()
    sentences = ["1 2 3 4", "1 2", "5 1 2 3 4 6", "7"] * 5  # tokens 1..7 only; 399 pads
    cal = Calibration(model, calibration_batches(model, sentences, 20, 8, 0))
    counts = cal.token_counts([model.emb])[id(model.emb)]
    assert counts[399] == 0 and counts[1] == 15 and counts.sum() == 65  # padding is not counted
    errors = {}
    for objective in ("output", "weight"):  # "weight": plain k-means, every row alike
        m = Bag()
        m.load_state_dict(model.state_dict())
        ds.quantize_(m, _cfg(k=32, block_size=4, objective=objective), data=sentences)
        errors[objective] = (m.emb.weight.detach() - original).pow(2).sum(1)
    # frequent rows are fitted much better when weighted by their counts, the rest a little worse
    assert float(errors["output"][1:8].mean()) < 0.5 * float(errors["weight"][1:8].mean())
    assert float(errors["output"].mean()) >= float(errors["weight"].mean())


# ----------------------------------------------------------------------------- the file


def test_save_load_is_exact_and_uses_the_pq_codec(tmp_path) -> None:
    model = ds.models.create("lenet5")
    x = torch.rand(32, 1, 28, 28)
    ds.quantize_(model, _cfg(k=64, block_size={"conv2": 25, "linear": 10}), data=x)
    model.eval()
    path = tmp_path / "pq.dsz"
    saved = ds.save(model, path)
    codecs = {t["name"]: t["codec"] for t in saved.tensors}
    assert codecs["conv2.weight"] == codecs["fc1.weight"] == codecs["fc2.weight"] == "pq"
    loaded = ds.load(path)
    assert not any(get_pq(m) for m in loaded.modules())
    for key, value in ds.codec.effective_state_dict(model).items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded(x), model(x))
    fc1 = saved.tensors[[t["name"] for t in saved.tensors].index("fc1.weight")]
    assert fc1["bytes"] <= 64 * 10 * 2 + 400_000 // 10  # float16 codebook + at most one byte a code
    assert saved.ratio > 15
    # folding keeps the values, and the writer still finds the structure
    fold_pq(model)
    assert ds.save(model, tmp_path / "folded.dsz").file_bytes == saved.file_bytes


def test_codec_round_trips_and_rejects_bad_params() -> None:
    rng = np.random.default_rng(0)
    codec = PQCodec()
    for book_dtype, bits_dtype in ((np.float16, np.uint32), (np.float32, np.uint32), (np.float16, np.uint16)):
        book = rng.standard_normal((200, 6)).astype(book_dtype)
        values = book[rng.integers(0, 200, 3000)].reshape(-1)
        bits = (values.astype(np.float32).view(np.uint32) if bits_dtype == np.uint32 else values.view(np.uint16)).copy()
        enc = encode_bits(bits)
        assert enc.codec == "pq" and enc.params["d"] == 6 and enc.params["k"] == 200
        assert enc.params["half"] == int(book_dtype == np.float16 and bits_dtype == np.uint32)
        assert np.array_equal(decode_bits("pq", enc.params, list(enc.blobs), bits.dtype, bits.size), bits)
    assert codec.encode(rng.standard_normal(5000).astype(np.float32).view(np.uint32)) is None  # dense weights
    good = dict(enc.params)
    for key, value in (("d", 0), ("d", 7), ("k", 300), ("half", 1), ("coded", 2), ("k", "9")):
        with pytest.raises(FormatError):
            decode_bits("pq", {**good, key: value}, list(enc.blobs), np.dtype("uint16"), bits.size)
    with pytest.raises(FormatError):
        decode_bits("pq", good, [enc.blobs[0][:-2], enc.blobs[1]], np.dtype("uint16"), bits.size)
    raw = {**good, "coded": 0, "k": 3}
    with pytest.raises(FormatError):  # a raw code pointing past the codebook
        decode_bits("pq", raw, [enc.blobs[0][: 3 * 6 * 2], bytes([5]) * (bits.size // 6)], np.dtype("uint16"), bits.size)


# ----------------------------------------------------------------------------- BN statistics and recipes


def test_batchnorm_statistics_are_recomputed_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    x = torch.randn(200, 3) * 3 + 1
    model.train()
    for _ in range(3):
        model(torch.randn(10, 3))  # stale statistics
    model.eval()
    ds.quantize_(model, BatchNormStats(samples=200, batch_size=200), data=x)
    h = model[0](x).detach()
    assert torch.allclose(model[1].running_mean, h.mean(0), atol=1e-5)
    assert torch.allclose(model[1].running_var, h.var(0), atol=1e-4)
    assert model[1].momentum == 0.1 and not model.training


@pytest.mark.parametrize("name", ["pq", "minilm-pq"])
def test_ready_recipes_parse(name: str) -> None:
    recipe = load_recipe(name)
    assert any(isinstance(s.config, ProductQuantization) for s in recipe.stages)


def test_a_module_shared_under_two_names_saves_and_reloads_quantized(tmp_path):
    # CoaT shares one position-encoding conv between blocks: the state dict names it twice, and load expects both.
    shared = torch.nn.Linear(16, 16)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared, torch.nn.Linear(16, 4))
    x = torch.randn(8, 16)
    ds.quantize_(model, ds.ProductQuantization(k=4, block_size=4, n_iter=2, objective="weight", progress=False))
    ds.save(model, tmp_path / "shared.dsz")
    skeleton = torch.nn.Linear(16, 16)
    again = ds.load(tmp_path / "shared.dsz", model=torch.nn.Sequential(skeleton, torch.nn.ReLU(), skeleton, torch.nn.Linear(16, 4)))
    assert torch.equal(again(x), model(x))
