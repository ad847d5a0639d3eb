"""The distillation loss used by recipes with `distill:`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from deepshrink.distill import KD, kd_loss
from deepshrink.recipe import recipe_from_dict


def test_kd_loss_equals_hand_computation():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    T, alpha = 2.0, 0.25
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    pt = [1 / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))]
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    ce = -math.log(math.exp(1) / (math.exp(1) + 1))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert abs(float(kd_loss(s, t, torch.tensor([0]), T, alpha)) - expected) < 1e-6


def test_alpha_zero_is_cross_entropy():
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.randint(0, 4, (5,))
    assert torch.allclose(kd_loss(s, t, y, 3.0, 0.0), F.cross_entropy(s, y, reduction="none"))


def test_recipe_distill_field_round_trips():
    r = recipe_from_dict({"name": "x", "stages": [{"finetune": {"epochs": 1}}], "distill": {"temperature": 3, "alpha": 0.6}})
    assert r.distill == KD(temperature=3.0, alpha=0.6)
    assert recipe_from_dict(r.to_dict()) == r
