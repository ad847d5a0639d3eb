"""deepshrink.distill: Hinton loss pieces, hints, ensembles, transfer data, assistants, prune-then-distill, text."""

from __future__ import annotations

import copy
import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepshrink as ds
from crash import Crash, CrashAt
from deepshrink.distill import HintedStudent, ensemble_logits, hint_loss, kd_objective, make_adapter

FAST = ds.TrainConfig(epochs=4, lr=0.05, optimizer="sgd", progress=False, eval_every_epoch=False)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small models on a shared machine: one thread is faster and steadier; restored afterwards.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits():
    return ds.data.load("digits")


@pytest.fixture(scope="module")
def teacher(digits):
    torch.manual_seed(0)
    model = ds.models.create("lenet300", in_features=64, num_classes=10)
    ds.train(model, digits, FAST.replace(epochs=5))
    return model.eval()


def _student(seed: int = 0, hidden=(16,)):
    torch.manual_seed(seed)
    return ds.models.create("mlp", in_features=64, hidden=list(hidden), num_classes=10)


def _agreement(a: nn.Module, b: nn.Module, dataset) -> float:
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        return float((a.eval()(x).argmax(-1) == b.eval()(x).argmax(-1)).float().mean())


def test_ensemble_soft_targets_are_the_average_of_the_teachers():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    T = 3.0
    expected = (F.softmax(a / T, -1) + F.softmax(b / T, -1)) / 2
    assert torch.allclose(F.softmax(ensemble_logits([a, b], T) / T, -1), expected, atol=1e-6)
    assert ensemble_logits([a], T) is a


def test_hint_loss_is_per_sample_mean_squared_error():
    a, t = torch.zeros(2, 3, 2, 2), torch.arange(24.0).reshape(2, 3, 2, 2)
    assert torch.allclose(hint_loss(a, t), (t**2).flatten(1).mean(1))


def test_adapters_map_student_features_to_the_teachers_shape():
    for s, t in [((2, 8, 12, 12), (2, 20, 4, 4)), ((2, 8, 4, 4), (2, 20, 8, 8)), ((2, 100), (2, 500)),
                 ((2, 7, 16), (2, 7, 32)), ((2, 8, 3, 3), (2, 50))]:
        adapter = make_adapter(torch.zeros(s), torch.zeros(t))
        assert adapter(torch.zeros(s)).shape == t


def test_hint_adapters_learn_and_pull_the_student_towards_the_teacher(digits, teacher):
    student = _student()
    x, y = digits.train.tensors[0][:64], digits.train.tensors[1][:64]
    wrapped = HintedStudent(student, ["fc1"], [make_adapter(torch.zeros(1, 16), torch.zeros(1, 100))])
    objective = kd_objective([teacher], ds.KD(alpha=0.0, hints=[("fc1", "fc2")], hint_weight=1.0))
    opt = torch.optim.Adam(wrapped.parameters(), lr=1e-2)
    wrapped.train()
    ce = F.cross_entropy(student(x), y, reduction="none")
    first = None
    for _ in range(60):
        loss = objective(wrapped, (x, y), None)
        if first is None:
            first = float((loss - F.cross_entropy(student(x), y, reduction="none")).mean().detach())  # the hint term
            assert torch.all(loss > ce - 1e-6)
        opt.zero_grad()
        loss.mean().backward()
        assert wrapped.adapters[0][1].weight.grad is not None
        opt.step()
    with torch.no_grad():
        last = float((objective(wrapped, (x, y), None) - F.cross_entropy(student(x), y, reduction="none")).mean())
    assert last < 0.3 * first


def test_distilled_student_follows_its_teacher(digits, teacher):
    student = _student()
    out = ds.distill(student, teacher, digits, ds.KD(temperature=4.0, alpha=0.9), FAST)
    assert out["steps"] == 4 * math.ceil(len(digits.train) / 64)
    assert _agreement(student, teacher, digits.test) > 0.85
    assert all(p.requires_grad for p in student.parameters())  # the student is left trainable


def test_unlabelled_transfer_data_is_labelled_by_the_teacher(digits, teacher):
    # Labels of the transfer set are wrong on purpose: they must be ignored.
    x, y = digits.train.tensors
    wrong = torch.utils.data.TensorDataset(x, (y + 1) % 10)
    student = _student()
    ds.distill(student, teacher, digits, ds.KD(temperature=2.0, alpha=0.5), FAST, transfer=wrong)
    assert _agreement(student, teacher, digits.test) > 0.85
    assert ds.evaluate(student, digits.test)["accuracy"] > 0.8


def test_an_ensemble_of_teachers(digits, teacher):
    second = copy.deepcopy(teacher)
    with torch.no_grad():
        second.fc3.bias.add_(torch.linspace(-0.5, 0.5, 10))
    student = _student()
    ds.distill(student, [teacher, second], digits, ds.KD(temperature=3.0, alpha=0.7), FAST)
    assert ds.evaluate(student, digits.test)["accuracy"] > 0.8
    with pytest.raises(ds.ConfigError, match="single teacher"):
        ds.distill(_student(), [teacher, second], digits, ds.KD(hints=[("fc1", "fc1")]), FAST)


def test_teacher_assistant_chain_trains_every_link(digits, teacher):
    torch.manual_seed(1)
    assistant = ds.models.create("mlp", in_features=64, hidden=[64], num_classes=10)
    before = copy.deepcopy(assistant.state_dict())
    student = _student()
    out = ds.distill(student, teacher, digits, ds.KD(temperature=4.0, alpha=0.9), FAST, assistants=[assistant])
    assert len(out["stages"]) == 2
    assert not torch.equal(before["fc1.weight"], assistant.fc1.weight)
    assert _agreement(assistant, teacher, digits.test) > 0.85
    assert _agreement(student, assistant, digits.test) > 0.8


def test_hinted_distillation_resumes_exactly(digits, teacher, tmp_path):
    """The adapters are in the checkpoint: an interrupted run resumed gives the uninterrupted result."""

    kd = ds.KD(temperature=4.0, alpha=0.5, hints=[("fc1", "fc2")], hint_weight=0.5)
    cfg = FAST.replace(epochs=2, checkpoint_every_steps=7)
    full = _student()
    ds.distill(full, teacher, digits, kd, cfg.replace(checkpoint_dir=str(tmp_path / "a")), [ds.Callback()])
    part = _student()
    with pytest.raises(Crash):
        ds.distill(part, teacher, digits, kd, cfg.replace(checkpoint_dir=str(tmp_path / "b")), [CrashAt(30)])
    resumed = _student()
    ds.distill(resumed, teacher, digits, kd, cfg.replace(checkpoint_dir=str(tmp_path / "b"), resume=True), [ds.Callback()])
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert list(resumed.state_dict()) == list(_student().state_dict())  # a plain student, no wrapper keys


def test_prune_then_distill_keeps_the_sparsity(digits, teacher):
    model = copy.deepcopy(teacher).train()
    for p in model.parameters():
        p.requires_grad_(True)
    original = copy.deepcopy(teacher)
    ds.prune_(model, ds.MagnitudePruning(sparsity=0.9, scope="layer"))
    pruned_acc = ds.evaluate(model, digits.test)["accuracy"]
    ds.distill(model, original, digits, ds.KD(temperature=4.0, alpha=0.7), FAST.replace(epochs=3))
    ds.fold_masks(model)
    for name in ("fc1", "fc2", "fc3"):
        w = getattr(model, name).weight
        assert abs(float((w == 0).float().mean()) - 0.9) < 0.002, name
    assert ds.evaluate(model, digits.test)["accuracy"] >= pruned_acc


def test_channel_pruned_student_with_a_hint_to_its_unpruned_teacher(digits):
    torch.manual_seed(0)
    teacher = ds.models.create("resnet_small", image_size=8, width=4)
    student = copy.deepcopy(teacher)
    ds.prune_(student, ds.ChannelPruning(ratio=0.5), example_inputs=(torch.rand(2, 1, 8, 8),))
    assert student.layer2[0].conv1.out_channels < teacher.layer2[0].conv1.out_channels
    kd = ds.KD(temperature=2.0, alpha=0.5, hints=[("layer2", "layer2")])
    out = ds.distill(student, teacher, digits, kd, FAST.replace(epochs=1, max_steps=3))
    assert out["steps"] == 3 and math.isfinite(out["history"][-1]["train_loss"])


def test_embedding_student_matches_its_teacher_on_text():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.EmbeddingBag(64, 8)

        def tokenize(self, sentences):
            # crc32, not hash(): Python salts str hashes per process, which made this test's tokens (and result) vary
            ids = torch.tensor([[zlib.crc32(w.encode()) % 64 for w in s.split()[:4]] + [0] * (4 - len(s.split()[:4]))
                                for s in sentences])
            return {"input_ids": ids, "attention_mask": (ids > 0).long()}

        def forward(self, input_ids, attention_mask=None):
            return self.emb(input_ids)

    data = ds.data.load("synthetic:text:200")
    torch.manual_seed(0)
    teacher, student = Toy(), Toy()
    sentences = [data.val[i] for i in range(len(data.val))]

    def cosine():
        with torch.no_grad():
            t = teacher(**teacher.tokenize(sentences))
            s = student(**student.tokenize(sentences))
        return float(F.cosine_similarity(s, t).mean())

    start = cosine()
    ds.distill(student, teacher, data, ds.KD(), ds.TrainConfig(epochs=40, batch_size=16, lr=0.05, progress=False))
    assert cosine() > max(0.9, start + 0.3)  # 0.995 here; 20 epochs left it at 0.90, on the edge
    assert not any(p.requires_grad for p in teacher.parameters())  # the teacher is frozen, never trained
    with pytest.raises(ds.ConfigError, match="one teacher"):
        ds.distill(student, teacher, data, ds.KD(hints=[("emb", "emb")]), FAST)


def test_bad_inputs_are_refused(digits, teacher):
    with pytest.raises(ValueError, match="own teacher"):
        ds.distill(teacher, teacher, digits, ds.KD(), FAST)
    with pytest.raises(ds.ConfigError, match="no \\['nope'\\]"):
        ds.distill(_student(), teacher, digits, ds.KD(hints=[("nope", "fc1")]), FAST)
    with pytest.raises(ds.ConfigError, match="temperature"):
        ds.KD(temperature=0)
    with pytest.raises(ds.ConfigError, match="hints"):
        ds.KD(hints=["fc1"])
    with pytest.raises(TypeError, match="KD"):
        ds.distill(_student(), teacher, digits, ds.TrainConfig(), FAST)


def test_kd_config_round_trips_with_hints():
    kd = ds.KD(temperature=3.0, alpha=0.25, hints=[("fc1", "conv2")], hint_weight=0.1)
    assert ds.config_from_yaml(ds.config_to_yaml(kd)) == kd
    assert ds.config_from_dict({"type": "kd", "hints": [["a", "b"]]}).hints == (("a", "b"),)
