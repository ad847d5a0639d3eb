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
