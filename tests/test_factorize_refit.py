"""Sequential refit of factored Linears (SVD reconstruct=True): optimal per layer, better end to end, safe."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.factorize.refit import forward_order, refit_factored
from deepshrink.factorize.svd import fit_linear


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 6)).eval()


def _inputs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(16, 16, generator=torch.Generator().manual_seed(99))  # correlated inputs, the same in every split
    return torch.randn(n, 16, generator=g) @ mix + 0.3


def _factored(original: nn.Sequential, rank: int) -> nn.Sequential:
    model = copy.deepcopy(original)
    for i in (0, 2, 4):
        model[i] = fit_linear(original[i], rank)
    return model


def test_one_layer_refit_is_the_reduced_rank_regression_optimum():
    torch.manual_seed(1)
    lin = nn.Linear(10, 8)
    x = torch.randn(400, 10) @ torch.randn(10, 10)
    target = nn.Sequential(lin)
    model = nn.Sequential(fit_linear(lin, 3))
    errs = refit_factored(model, target, ["0"], [(x[i : i + 100],) for i in range(0, 400, 100)], ridge=0.0)
    # Brute force: the best rank-3 map of the centred data is the rank-3 truncation of the centred OLS fit.
    with torch.no_grad():
        y = lin(x).double()
        xc, yc = x.double() - x.double().mean(0), y - y.mean(0)
        fitted = xc @ torch.linalg.lstsq(xc, yc).solution
        u, s, vh = torch.linalg.svd(fitted, full_matrices=False)
        best = yc - (u[:, :3] * s[:3]) @ vh[:3]
        optimum = float((best**2).sum() / (y**2).sum())
        got = float(((model(x).double() - y) ** 2).sum() / (y**2).sum())
    assert errs["0"]["after"] == pytest.approx(optimum, rel=1e-6, abs=1e-10)
    assert got == pytest.approx(optimum, rel=1e-4, abs=1e-8)
    assert errs["0"]["after"] < errs["0"]["before"]


def test_refit_lowers_the_end_to_end_error_on_unseen_inputs():
    original = _mlp()
    plain = _factored(original, 4)
    refit = copy.deepcopy(plain)
    train = [(_inputs(256, s),) for s in range(4)]
    errs = refit_factored(refit, original, ["4", "0", "2"], train)  # any order given: fitted bottom up
    assert list(errs) == ["0", "2", "4"]
    assert all(e["after"] <= e["before"] for e in errs.values())
    x = _inputs(512, 100)
    with torch.no_grad():
        want = original(x)
        e_plain = float((plain(x) - want).norm() / want.norm())
        e_refit = float((refit(x) - want).norm() / want.norm())
    assert e_refit < 0.8 * e_plain, (e_refit, e_plain)


def test_full_rank_stays_exact_and_modes_are_restored():
    original = _mlp()
    model = _factored(original, 24)  # rank 24 >= every layer's rank: exact
    model.train()
    errs = refit_factored(model, original, ["0", "2", "4"], [(_inputs(128, 3),)])
    assert model.training and not original.training
    x = _inputs(64, 7)
    torch.testing.assert_close(model.eval()(x), original(x), atol=1e-4, rtol=1e-4)
    assert all(e["after"] < 1e-8 for e in errs.values())


def test_forward_order_follows_the_forward_pass():
    class Swapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late, self.early = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.late(self.early(x))

    assert forward_order(Swapped(), ["late", "early"], (torch.zeros(1, 3),)) == ["early", "late"]


def test_svd_reconstruct_through_factorize_and_dsz(tmp_path):
    data = ds.data.load("digits")
    torch.manual_seed(0)
    original = ds.models.create("lenet300", in_features=64, num_classes=10).eval()
    base = ds.SVD(rank=6, whiten=True, calibration_samples=512, latency=False)
    plain, refit = copy.deepcopy(original), copy.deepcopy(original)
    ds.factorize_(plain, base, data=data)
    report = ds.factorize_(refit, base.replace(reconstruct=True), data=data)
    rows = report.per_layer.values()
    assert all(r["refit_error_after"] <= r["refit_error_before"] for r in rows)
    x = torch.stack([torch.as_tensor(data.test[i][0]) for i in range(200)])
    with torch.no_grad():
        want = original(x)
        assert (refit(x) - want).norm() < (plain(x) - want).norm()
    path = tmp_path / "refit.dsz"
    ds.save(refit, path)
    again = ds.load(path, model=ds.models.create("lenet300", in_features=64, num_classes=10))
    assert torch.equal(again.eval()(x), refit(x))


def test_reconstruct_needs_data_and_a_boolean():
    with pytest.raises(ds.ConfigError, match="reconstruct"):
        ds.factorize_(_mlp(), ds.SVD(rank=4, reconstruct=True), example_inputs=(torch.zeros(1, 16),))
    with pytest.raises(ds.ConfigError, match="reconstruct"):
        ds.SVD(rank=4, reconstruct="yes")
