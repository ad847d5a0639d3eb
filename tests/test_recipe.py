"""Recipes: validation, built-in recipes parse, run_recipe runs stages in order."""

from __future__ import annotations

import pytest
import torch

import deepshrink as ds
from deepshrink.recipe import builtin_recipes, load_recipe, recipe_from_dict


@pytest.mark.parametrize("name", builtin_recipes())
def test_builtin_recipes_parse_and_round_trip(name):
    recipe = load_recipe(name)
    assert recipe.stages
    assert recipe_from_dict(recipe.to_dict()) == recipe


def test_bad_recipes_name_the_problem():
    with pytest.raises(ds.ConfigError, match="stages"):
        recipe_from_dict({"name": "x"})
    with pytest.raises(ds.ConfigError, match="bogus"):
        recipe_from_dict({"name": "x", "stages": [{"finetune": {"epochs": 1}}], "bogus": 1})
    with pytest.raises(ds.ConfigError, match="epochs"):
        recipe_from_dict({"name": "x", "stages": [{"finetune": {"epochs": -1}}]})
    with pytest.raises(ds.ConfigError, match="compression config"):
        recipe_from_dict({"name": "x", "stages": [{"config": {"type": "train"}}]})
    with pytest.raises(ds.ConfigError, match="magnitude_pruning"):
        recipe_from_dict({"name": "x", "stages": [{"config": {"type": "no_such_method"}}]})


def test_run_recipe_finetune_stage_improves_a_model():
    data = ds.data.load("digits")
    model = ds.models.create("lenet300", in_features=64, num_classes=10)
    before = ds.evaluate(model, data.val)["accuracy"]
    recipe = recipe_from_dict({"name": "ft", "stages": [{"name": "ft", "finetune": {"epochs": 2, "optimizer": "sgd", "lr": 0.05}}]})
    report = ds.run_recipe(model, data, recipe, train_overrides={"progress": False})
    assert report.stages[0]["name"] == "ft"
    assert report.stages[0]["val"]["accuracy"] > before + 0.3


def test_calibration_entry_validates_and_round_trips():
    stages = [{"finetune": {"epochs": 1, "augment": "words"}}]
    recipe = recipe_from_dict({"name": "x", "stages": stages, "calibration": {"augment": "words", "copies": 2, "rate": 0.5}})
    assert (recipe.calibration.augment, recipe.calibration.copies, recipe.calibration.rate) == ("words", 2, 0.5)
    assert recipe_from_dict(recipe.to_dict()) == recipe
    with pytest.raises(ds.ConfigError, match="calibration.copies"):
        recipe_from_dict({"name": "x", "stages": stages, "calibration": {"augment": "words", "copies": 0}})
    with pytest.raises(ds.ConfigError, match="calibration.rate"):
        recipe_from_dict({"name": "x", "stages": stages, "calibration": {"augment": "words", "rate": 1.5}})
    with pytest.raises(ds.ConfigError, match="calibration.seed"):
        recipe_from_dict({"name": "x", "stages": stages, "calibration": {"seed": 1}})
    with pytest.raises(ds.ConfigError, match="calibration"):
        recipe_from_dict({"name": "x", "stages": stages, "calibration": "words"})


def test_calibration_widens_text_data_for_the_compression_stages():
    """The compression verb sees every training sentence followed by a word-replaced copy; val/test are untouched."""
    from deepshrink.recipe import CalibrationData, _calibration_data

    data = ds.data.load("text:pydoc")
    model = ds.models.create("minilm")
    widened = _calibration_data(model, data, CalibrationData(augment="words", copies=1, rate=0.5))
    n = len(data.train)
    assert len(widened.train) == 2 * n and widened.val is data.val and widened.test is data.test
    originals = [widened.train[2 * i] for i in range(n)]
    copies = [widened.train[2 * i + 1] for i in range(n)]
    assert originals == [data.train[i] for i in range(n)]
    assert all(len(c.split()) == len(o.split()) for c, o in zip(copies, originals))
    changed = sum(a != b for c, o in zip(copies, originals) for a, b in zip(c.split(), o.split()))
    assert abs(changed / sum(len(o.split()) for o in originals) - 0.5) < 0.05
    assert _calibration_data(model, data, None) is data
    # Word replacement is for text: on images the recipe says so instead of ignoring it.
    with pytest.raises(ds.ConfigError, match="text data only"):
        _calibration_data(model, ds.data.load("digits"), CalibrationData(augment="words"))
