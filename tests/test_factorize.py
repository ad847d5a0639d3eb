"""Factorization: exact at full rank, error falls with rank, bit-exact .dsz round trips, hostile log entries."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import deepshrink as ds
from deepshrink.errors import FormatError
from deepshrink.factorize.compact import fit_depthwise_separable, fit_fire
from deepshrink.factorize.cp import fit_cp
from deepshrink.factorize.separable import fit_separable
from deepshrink.factorize.svd import fit_linear
from deepshrink.factorize.tucker import fit_tucker2
from deepshrink.surgery import replay_surgery, surgery_log

# (config at full rank, spec, factory kwargs, input shape): every layer the method applies to is factored exactly.
FULL_RANK = [
    ("svd", ds.SVD(rank=10_000, latency=False), "lenet300", (3, 64)),
    ("tucker", ds.Tucker(ranks=(10_000, 10_000), latency=False, iterations=0), "vgg_small", (2, 1, 16, 16)),
    ("cp", ds.CP(rank=10_000, latency=False), "cnn_small", (2, 1, 16, 16)),
    ("separable", ds.Separable(rank=10_000, latency=False), "resnet_small", (2, 1, 16, 16)),
    ("depthwise", ds.DepthwiseSeparable(multiplier=10_000, least_squares=False, latency=False), "lenet5", (2, 1, 28, 28)),
    ("fire", ds.Fire(squeeze=10_000, expand1x1=0.0, latency=False), "cnn_small", (2, 1, 16, 16)),
]


def _model(spec: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"image_size": 16} if spec in ("vgg_small", "cnn_small", "resnet_small") else {}
    if spec == "lenet300":
        kwargs = {"in_features": 64}  # digits-sized: the same layers, smaller SVDs
    return ds.models.create(spec, **kwargs).eval()


@pytest.mark.parametrize("name,cfg,spec,shape", FULL_RANK, ids=[f[0] for f in FULL_RANK])
def test_full_rank_is_exact_and_dsz_round_trip_is_bit_exact(tmp_path, name, cfg, spec, shape):
    model = _model(spec)
    x = torch.randn(*shape)
    with torch.no_grad():
        want = model(x)
    report = ds.factorize_(model, cfg, example_inputs=(x[:1],))
    assert report.changed and len(surgery_log(model)) == len(report.changed)
    with torch.no_grad():
        got = model.eval()(x)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    path = tmp_path / f"{name}.dsz"
    ds.save(model, path)
    again = ds.load(path)
    assert [type(again.get_submodule(n)).__name__ for n in report.changed] == [report.per_layer[n]["kind"] for n in report.changed]
    with torch.no_grad():
        assert torch.equal(again(x), got)


def test_svd_embedding_and_whitened_linear_exact_and_round_trip(tmp_path):
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 12, padding_idx=0)
            self.fc = nn.Linear(12, 5)

        def forward(self, ids):
            return self.fc(self.emb(ids)).mean(1)

    torch.manual_seed(0)
    model = Tiny().eval()
    ids = torch.randint(0, 50, (4, 7))
    want = model(ids)
    rep = ds.factorize_(model, ds.SVD(rank=12, embeddings=True, latency=False), example_inputs=(ids[:1],))
    assert rep.changed == ["emb", "fc"] and type(model.emb).__name__ == "FactoredEmbedding"
    torch.testing.assert_close(model(ids), want, atol=1e-5, rtol=1e-4)
    path = tmp_path / "tiny.dsz"
    ds.save(model, path)
    again = ds.load(path, model=Tiny())
    assert torch.equal(again(ids), model(ids))
    # whitened SVD at full rank is exact too, whatever the covariance
    lin = nn.Linear(9, 7)
    a = torch.randn(9, 9)
    x = torch.randn(5, 9)
    torch.testing.assert_close(fit_linear(lin, 7, a @ a.T)(x), lin(x), atol=1e-5, rtol=1e-4)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_error_falls_as_rank_grows():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, padding=1)
    lin = nn.Linear(30, 20)
    x, v = torch.randn(4, 8, 10, 10), torch.randn(16, 30)
    with torch.no_grad():
        y, w = conv(x), lin(v)
        fits = {
            "svd": [_rel(fit_linear(lin, r)(v), w) for r in (1, 5, 10, 20)],
            "tucker": [_rel(fit_tucker2(conv, (r, 3 * r // 2))(x), y) for r in (2, 4, 6, 8)],
            "cp": [_rel(fit_cp(conv, r, iterations=50)(x), y) for r in (2, 8, 32, 72)],
            "separable": [_rel(fit_separable(conv, r)(x), y) for r in (2, 6, 12, 24)],
            "depthwise": [_rel(fit_depthwise_separable(conv, m, x)(x), y) for m in (1, 3, 6, 9)],
            "fire": [_rel(fit_fire(conv, s, 0, x)(x), y) for s in (2, 4, 6, 8)],
        }
    for name, errs in fits.items():
        assert all(b <= a + 1e-6 for a, b in zip(errs, errs[1:])), (name, errs)
        assert errs[-1] < 1e-4 and errs[0] > 0.2, (name, errs)


def test_least_squares_fit_beats_weight_space_fit_on_data():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, padding=1)
    # correlated inputs: the data-driven fit can exploit their structure, the weight-space fit cannot
    x = torch.einsum("bchw,cd->bdhw", torch.randn(16, 6, 8, 8), torch.randn(6, 6)) + 0.5
    with torch.no_grad():
        y = conv(x)
        for fit in (lambda inp: fit_depthwise_separable(conv, 1, inp), lambda inp: fit_fire(conv, 3, 5, inp)):
            assert _rel(fit(x)(x), y) < 0.99 * _rel(fit(None)(x), y)  # least squares is optimal for its stage


def test_ratio_uniform_meets_the_budget_per_layer_for_params_and_macs():
    model = _model("vgg_small")
    x = torch.randn(1, 1, 16, 16)
    for target in ("params", "macs"):
        m = copy.deepcopy(model)
        rep = ds.factorize_(m, ds.Tucker(ratio=1 / 3, target=target, latency=False, iterations=2), example_inputs=(x,))
        assert rep.changed
        for row in rep.per_layer.values():
            key = "params" if target == "params" else "macs"
            assert row[f"{key}_after"] <= row[f"{key}_before"] / 3
            assert row[f"{key}_after"] > row[f"{key}_before"] / 6  # the largest rank that fits, not any rank
        # the MACs the driver budgets with are deepshrink.analysis's counts of the real modules
        assert rep.figures["layer_macs_after"] == sum(
            ds.analysis.total_macs(m.get_submodule(n), (ds.factorize.calibrate.layer_examples(m, [n], (x,))[n],))
            for n in rep.changed)


def test_sensitivity_allocation_meets_budget_and_spares_the_sensitive_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
    with torch.no_grad():
        model[0].weight.mul_(0.01)  # barely matters: its output is small next to the second layer's
        model[2].weight.copy_(torch.linalg.qr(torch.randn(32, 32))[0] * 3)  # orthogonal: every direction counts
    x = torch.randn(64, 32)
    cfg = ds.SVD(ratio=0.5, allocation="sensitivity", layers=("0", "2"), latency=False, levels=8)
    rep = ds.factorize_(model, cfg, example_inputs=(x,))
    assert rep.figures["layer_params_after"] + sum(
        sum(p.numel() for p in model[i].parameters()) for i in (0, 2) if str(i) not in rep.changed
    ) <= 0.5 * 2 * (32 * 32 + 32)
    ranks = {n: r["rank"] for n, r in rep.per_layer.items()}
    assert "0" in ranks and ranks["0"] <= 4
    assert ranks.get("2", 32) > ranks["0"]
    assert set(rep.figures["sensitivity"]) == {"0", "2"}


def test_sensitivity_on_classification_data_and_recipe_run(tmp_path):
    data = ds.data.load("digits")
    model = ds.models.create("lenet300", in_features=64, num_classes=10)
    ds.train(model, data, ds.TrainConfig(epochs=2, progress=False, optimizer="adam", lr=3e-3))
    recipe = ds.recipe.recipe_from_dict({"name": "t", "stages": [
        {"config": {"type": "svd", "ratio": 0.34, "allocation": "sensitivity", "levels": 3, "sensitivity_samples": 128},
         "finetune": {"epochs": 1, "progress": False}}]})
    rep = ds.run_recipe(model, data, recipe)
    stage = rep.stages[0]["report"]
    assert stage["figures"]["sensitivity_loss"] == "cross_entropy"
    assert stage["figures"]["param_ratio"] <= 0.35
    row = next(iter(stage["per_layer"].values()))
    assert {"params_before", "params_after", "macs_before", "macs_after", "latency_ms_before", "latency_ms_after"} <= set(row)
    path = tmp_path / "m.dsz"
    ds.save(model, path)
    assert torch.equal(ds.load(path)(data.test[0][0][None]), model.eval()(data.test[0][0][None]))


def test_factored_layers_are_not_factored_again():
    model = _model("cnn_small")
    x = torch.randn(1, 1, 16, 16)
    ds.factorize_(model, ds.Tucker(ranks=(2, 4), latency=False), example_inputs=(x,))
    rep = ds.factorize_(model, ds.Tucker(ranks=(2, 4), latency=False), example_inputs=(x,))
    assert rep.changed == []
    assert len(surgery_log(model)) == 2


@pytest.mark.parametrize("builtin", ["svd", "tucker", "cp", "minilm-svd"])
def test_builtin_factorize_recipes_parse(builtin):
    recipe = ds.load_recipe(builtin)
    assert any(s.config is not None and s.finetune is not None for s in recipe.stages) or builtin == "minilm-svd"


def test_bad_configs_name_the_field():
    with pytest.raises(ds.ConfigError, match="exactly one of rank, energy, ratio"):
        ds.SVD()
    with pytest.raises(ds.ConfigError, match="ranks"):
        ds.Tucker(ranks=(0, 3))
    with pytest.raises(ds.ConfigError, match="allocation"):
        ds.CP(rank=3, allocation="sensitivity")
    with pytest.raises(ds.ConfigError, match="ratio"):
        ds.Separable(ratio=1.5)
    with pytest.raises(ds.ConfigError, match="expand1x1"):
        ds.Fire(squeeze=2, expand1x1=1.0)
    with pytest.raises(ds.ConfigError, match="whiten"):
        ds.factorize_(_model("lenet300"), ds.SVD(ratio=0.5, whiten=True))  # no data to whiten by
    with pytest.raises(ds.ConfigError, match="macs"):
        ds.factorize_(_model("lenet300"), ds.SVD(ratio=0.5, target="macs"))
    assert ds.config_from_yaml("type: tucker\nranks: [2, 3]\n") == ds.Tucker(ranks=(2, 3))


HOSTILE = [
    {"op": "svd_linear", "module": "fc1", "rank": 0},
    {"op": "svd_linear", "module": "fc1", "rank": 10**12},
    {"op": "svd_linear", "module": "fc1", "rank": True},
    {"op": "svd_linear", "module": "fc1", "rank": "3"},
    {"op": "svd_linear", "module": "fc1", "rank": 3, "extra": 1},
    {"op": "svd_linear", "module": "fc1"},
    {"op": "svd_linear", "module": 7, "rank": 3},
    {"op": "svd_linear", "module": "nope", "rank": 3},
    {"op": "svd_linear", "module": "conv1", "rank": 3},
    {"op": "svd_embedding", "module": "fc1", "rank": 3},
    {"op": "tucker2_conv", "module": "conv2", "ranks": [2]},
    {"op": "tucker2_conv", "module": "conv2", "ranks": [2, 10**9]},
    {"op": "tucker2_conv", "module": "conv2", "ranks": "22"},
    {"op": "tucker2_conv", "module": "fc1", "ranks": [2, 2]},
    {"op": "cp_conv", "module": "conv2", "rank": -1},
    {"op": "cp_conv", "module": "conv2", "rank": 10**9},
    {"op": "separable_conv", "module": "conv2", "rank": 10**9},
    {"op": "depthwise_separable_conv", "module": "conv2", "multiplier": 26},
    {"op": "fire_conv", "module": "conv2", "squeeze": 4, "expand1x1": 1, "order": list(range(49))},
    {"op": "fire_conv", "module": "conv2", "squeeze": 4, "expand1x1": 1, "order": [0] * 50},
    {"op": "fire_conv", "module": "conv2", "squeeze": 4, "expand1x1": 50, "order": list(range(50))},
    {"op": "fire_conv", "module": "conv2", "squeeze": 4, "expand1x1": 1, "order": None},
]


@pytest.mark.parametrize("entry", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_entries_raise_format_error(entry):
    with torch.device("meta"):
        model = ds.models.create("lenet5")
    with pytest.raises(FormatError):
        replay_surgery(model, [entry])


def test_factoring_twice_the_same_layer_in_a_log_is_refused():
    with torch.device("meta"):
        model = ds.models.create("lenet5")
    entry = {"op": "tucker2_conv", "module": "conv2", "ranks": [2, 3]}
    with pytest.raises(FormatError, match="TuckerConv2d"):
        replay_surgery(model, [entry, entry])


@pytest.mark.parametrize("verb, config", [
    (ds.factorize_, ds.SVD(rank=4, latency=False)),
    (ds.prune_, ds.MagnitudePruning(sparsity=0.5)),
    (ds.prune_, ds.ChannelPruning(ratio=0.5)),
    (ds.quantize_, ds.Int8(activations="dynamic")),
    (ds.share_, ds.KMeansSharing(bits=4)),
    (ds.quantize_, ds.ProductQuantization(block_size=4, k=16)),
])
def test_every_verb_refuses_non_finite_weights_naming_them_and_leaves_the_model_untouched(verb, config):
    model = _model("lenet300")
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
        model.fc3.bias[1] = float("inf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ds.UnsupportedModelError, match=r"non-finite weights .* in 'fc2.weight', 'fc3.bias'"):
        verb(model, config, example_inputs=ds.models.example_inputs(model))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, equal_nan=True)
    assert all(type(m) is nn.Linear and not parametrize.is_parametrized(m) for m in (model.fc1, model.fc2, model.fc3))


def test_multihead_attention_out_proj_is_skipped_with_the_reason(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)

    def vit() -> nn.Module:
        return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                    hidden_dim=64, mlp_dim=128, num_classes=10).eval()

    model, x = vit(), torch.randn(2, 3, 32, 32)
    report = ds.factorize_(model, ds.SVD(ratio=0.5, latency=False), example_inputs=(x,))
    out_proj = [n for n in report.skipped if n.endswith("self_attention.out_proj")]
    assert len(out_proj) == 2 and all("MultiheadAttention" in report.skipped[n] for n in out_proj)
    assert "encoder.layers.encoder_layer_0.mlp.0" in report.changed
    y = model(x)
    assert y.shape == (2, 10)
    ds.save(model, tmp_path / "vit.dsz")
    assert torch.equal(ds.load(tmp_path / "vit.dsz", model=vit())(x), y)


def test_a_layer_whose_parent_reads_its_weight_is_skipped_with_the_reason(tmp_path):
    class ReadsWeight(nn.Module):  # as Swin's window attention: the parent uses fc.weight in a functional call
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out, self.bn = nn.Linear(8, 8), nn.Linear(8, 3), nn.BatchNorm1d(8)

        def forward(self, x):
            return self.out(torch.relu(self.bn(torch.nn.functional.linear(x, self.fc.weight, self.fc.bias))))

    torch.manual_seed(0)
    model = ReadsWeight()  # train mode: the trial forward must not move the batch-norm statistics
    stats = model.bn.running_mean.clone()
    x = torch.randn(4, 8)
    report = ds.factorize_(model, ds.SVD(rank=2, latency=False), example_inputs=(x,))
    assert report.changed == ["out"] and "reads the layer's weight directly" in report.skipped["fc"]
    assert torch.equal(model.bn.running_mean, stats) and model.training
    model.eval()
    ds.save(model, tmp_path / "r.dsz")
    assert torch.equal(ds.load(tmp_path / "r.dsz", model=ReadsWeight())(x), model(x))


def test_sensitivity_allocation_shows_its_progress_on_stderr_unless_turned_off(capsys):
    data = ds.data.load("synthetic:classification:64")
    model = ds.models.create("lenet300", in_features=64, num_classes=4)
    cfg = ds.SVD(ratio=0.5, allocation="sensitivity", levels=3, sensitivity_samples=16, latency=False)
    ds.factorize_(model, cfg, data=data)
    err = capsys.readouterr().err
    # 3 Linear layers x 2 level ranks probed, then the layers fitted at their chosen ranks
    assert "svd sensitivity" in err and "6/6" in err
    quiet = ds.models.create("lenet300", in_features=64, num_classes=4)
    ds.factorize_(quiet, cfg.replace(progress=False), data=data)
    assert capsys.readouterr().err == ""


def test_cp_sensitivity_trials_use_probe_iterations_and_the_final_fits_use_iterations(monkeypatch):
    import deepshrink.factorize.cp as cp_module

    calls: list[int] = []
    real = cp_module.cp_als

    def counting(weight, rank, iterations=100, tol=1e-7, seed=0):
        calls.append(iterations)
        return real(weight, rank, iterations, tol, seed)

    monkeypatch.setattr(cp_module, "cp_als", counting)
    torch.manual_seed(0)
    data = ds.data.load("digits")
    model = ds.models.create("vgg_small", image_size=8)
    original = copy.deepcopy(model)
    cfg = ds.CP(ratio=0.5, allocation="sensitivity", levels=3, iterations=40, probe_iterations=3, progress=False, latency=False,
                sensitivity_samples=64)
    report = ds.factorize_(model, cfg, data=data)
    finals = len(report.changed)
    assert finals >= 1 and calls[-finals:] == [40] * finals  # each layer's own fit: all the sweeps
    assert calls[:-finals] and set(calls[:-finals]) == {3}  # every trial fit of the sensitivity curves: the cheap ones
    for name in report.changed:  # the kept fit is exactly a full fit at the chosen rank
        rank = report.per_layer[name]["rank"]
        want = fit_cp(original.get_submodule(name), rank, iterations=40)
        got = model.get_submodule(name)
        assert all(torch.equal(a, b) for a, b in zip(want.state_dict().values(), got.state_dict().values()))
    with pytest.raises(ds.errors.ConfigError, match="probe_iterations"):
        ds.CP(ratio=0.5, probe_iterations=0)
