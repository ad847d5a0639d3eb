"""Calibration data is a seeded random sample of the training split, never its first items.

Training splits are often grouped by class (stratified splits such as mnist5k's,
image folders). Every consumer that measures statistics on "some training
batches" (channel criteria, least-squares refits, int8 observers, batch-norm
re-estimation, PQ calibration) must see every class, and each batch must mix
classes, or the statistics describe one class.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepshrink.data.bundle import DataBundle
from deepshrink.prune.activation_importance import calibration_inputs
from deepshrink.prune.reconstruct import calibration_batches as reconstruct_batches
from deepshrink.quantize.int8 import calibration_batches as int8_batches
from deepshrink.quantize.pq_calibrate import calibration_batches as pq_batches

CLASSES = 10


def _grouped_bundle(per_class: int = 40) -> DataBundle:
    # Sorted by class, and every input is filled with its class number, so a batch shows which classes it holds.
    y = torch.arange(CLASSES).repeat_interleave(per_class)
    x = y.float().view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    part = TensorDataset(x, y)
    return DataBundle("grouped", part, part, part, (1, 4, 4), CLASSES)


def _classes(batch: torch.Tensor) -> set[int]:
    return {int(v) for v in batch[:, 0, 0, 0].tolist()}


def test_criteria_and_refit_batches_are_random_and_mixed():
    data = _grouped_bundle()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    for batches in (calibration_inputs(model, (data.train[0][0][None],), data, 32, 4, seed=0),
                    reconstruct_batches(model, data, 4, 32, seed=0)):
        seen = set().union(*(_classes(b[0]) for b in batches))
        assert seen == set(range(CLASSES))
        assert all(len(_classes(b[0])) >= 5 for b in batches)  # each batch mixes classes
    a = calibration_inputs(model, (data.train[0][0][None],), data, 32, 2, seed=1)
    b = calibration_inputs(model, (data.train[0][0][None],), data, 32, 2, seed=1)
    assert torch.equal(a[0][0], b[0][0])  # seeded: the same seed, the same batches


def test_int8_and_pq_calibration_batches_mix_classes():
    data = _grouped_bundle()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    for batch in int8_batches(model, None, data, batches=4, batch_size=32):
        assert len(_classes(batch[0])) >= 5
    for batch in pq_batches(model, data, samples=128, batch_size=32, seed=0):
        assert len(_classes(batch.args[0])) >= 5


def test_text_criteria_measure_tokenized_training_sentences():
    from deepshrink.data.bundle import DataBundle as Bundle

    class Tok(nn.Module):
        # A stand-in text model: "tokenizes" a sentence into its word count, so batches show what was measured.
        def tokenize(self, sentences):
            ids = torch.tensor([[len(s.split())] for s in sentences])
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    train = [" ".join(["w"] * (i + 1)) for i in range(64)]  # sentence i has i + 1 words
    data = Bundle("t", train, ["x"], ["y z"], (), 0, task="text")
    batches = calibration_inputs(Tok(), (torch.zeros(1, 1, dtype=torch.long),), data, 16, 2, seed=0)
    lengths = torch.cat([b[0] for b in batches]).flatten()
    assert len(batches) == 2 and lengths.numel() == 32 and len(set(lengths.tolist())) == 32  # 32 distinct training sentences
    assert int(lengths.max()) > 32  # drawn from the whole split, not its first 32 sentences
