"""Config validation (ValueError naming field, value and what is allowed) and round trips."""

from __future__ import annotations

import dataclasses

import pytest

import deepshrink as ds
from deepshrink.config import registered_config_types


def test_invalid_field_names_field_value_and_allowed():
    with pytest.raises(ValueError) as err:
        ds.TrainConfig(lr=-0.1)
    msg = str(err.value)
    assert "lr" in msg and "-0.1" in msg and "(0, inf)" in msg
    assert isinstance(err.value, ds.ConfigError)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"epochs": -1}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"schedule": "linear-ish"}, "schedule"),
        ({"momentum": 1.0}, "momentum"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"augment": "mixup"}, "augment"),
        ({"device": "tpu"}, "device"),
        ({"resume": True}, "resume"),  # resume needs a checkpoint_dir
        ({"progress": "yes"}, "progress"),
    ],
)
def test_each_bad_field_is_refused(kwargs, field):
    with pytest.raises(ds.ConfigError) as err:
        ds.TrainConfig(**kwargs)
    assert err.value.field == field
    assert field in str(err.value)


def test_frozen():
    cfg = ds.TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]


# Configs whose one required choice has no sensible default (a rank, where to attach exits).
REQUIRED = {
    "cp": {"rank": 4},
    "early_exits": {"after": ("layer1",)},
    "fire": {"squeeze": 4},
    "separable": {"rank": 2},
    "svd": {"ratio": 0.5},
}


@pytest.mark.parametrize("name, cls", sorted(registered_config_types().items()))
def test_every_registered_config_round_trips_json_and_yaml(name, cls):
    cfg = cls(**REQUIRED.get(name, {}))  # every other config has usable defaults
    assert ds.config_from_json(ds.config_to_json(cfg)) == cfg
    assert ds.config_from_yaml(ds.config_to_yaml(cfg)) == cfg
    d = cfg.to_dict()
    assert d["type"] == name and d["version"] == cls.version


def test_round_trip_keeps_non_default_values():
    cfg = ds.TrainConfig(epochs=7, lr=0.02, optimizer="sgd", grad_clip=1.0, checkpoint_dir="/tmp/x", resume=True)
    assert ds.config_from_yaml(ds.config_to_yaml(cfg)) == cfg


def test_unknown_type_is_refused_and_lists_known():
    with pytest.raises(ds.ConfigError) as err:
        ds.config_from_dict({"type": "os.system", "cmd": "rm -rf /"})
    assert "train" in str(err.value)


def test_unknown_field_is_refused():
    with pytest.raises(ds.ConfigError) as err:
        ds.config_from_dict({"type": "train", "epoch": 3})
    assert "epoch" in str(err.value) and "epochs" in str(err.value)


def test_future_version_is_refused():
    with pytest.raises(ds.ConfigError) as err:
        ds.config_from_dict({"type": "train", "version": 99})
    assert "version" in str(err.value)


def test_yaml_loader_is_safe():
    with pytest.raises(ds.ConfigError):
        ds.config_from_yaml("!!python/object/apply:os.system ['echo hacked']")


def test_int_given_for_float_field_is_accepted_from_files():
    assert ds.config_from_yaml("type: train\nlr: 1\n").lr == 1.0
