"""Recipes: a compression pipeline as data (a YAML list of stages).

A recipe file looks like::

    name: deep-compression
    description: prune, share weights, entropy-code (Han et al. 2016)
    stages:
      - name: prune
        config: {type: magnitude_pruning, sparsity: 0.92, scope: layer}
        finetune: {epochs: 4, lr: 0.0003}
      - name: share
        config: {type: kmeans_sharing, bits: {conv: 8, linear: 5}}
        finetune: {epochs: 2, lr: 0.0001}
    distill: {temperature: 4, alpha: 0.7}   # optional
    calibration: {augment: words, copies: 1}  # optional, text data only
    extra_text: {source: wiki-markov, sentences: 3000}  # optional, text data only

With ``distill``, every fine-tuning stage learns from the outputs of the model
as it was before the recipe ran (Hinton et al. 2015), as well as from the labels.
On text data (``task == "text"``, e.g. ``text:pydoc``) there are no labels:
fine-tuning stages always match the embeddings and token states of the model as
it was before the recipe ran (:func:`deepshrink.distill.embedding.embedding_objective`),
and each stage reports the validation cosine similarity to it.

With ``calibration: {augment: words}`` the compression stages calibrate on the
training sentences plus ``copies`` word-replaced versions of each
(:func:`deepshrink.data.text_augment.widen_text_data`), so that the activation
statistics they fit hold beyond the training text's domain; fine-tuning stages
augment their batches the same way with ``finetune: {augment: words}``.

With ``extra_text`` the training split of text data also holds that many
sentences of general English (:mod:`deepshrink.data.wiki_markov`), interleaved
with the data's own, for calibration and fine-tuning alike: matching the
original needs no labels, so any text can teach the student, and text of more
than one domain teaches it more of what holds elsewhere. Validation and test
splits stay the data's own.

Each ``config`` is a registered config (see :mod:`deepshrink.config`); each
``finetune`` holds :class:`~deepshrink.TrainConfig` fields. Named recipes
live in the ``recipes/`` folder of the project.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from .config import Config, config_from_dict, config_to_dict
from .data.bundle import DataBundle
from .data.text_augment import WORD_RATE, model_word_draws, widen_text_data
from .dispatch import verb_for
from .distill.config import KD
from .errors import ConfigError, SpecError
from .train.callbacks import Callback
from .train.config import TrainConfig

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
_STAGE_KEYS = ("name", "config", "finetune")
_RECIPE_KEYS = ("name", "description", "stages", "distill", "calibration", "extra_text")
_CALIBRATION_KEYS = ("augment", "copies", "rate")
_EXTRA_TEXT_KEYS = ("source", "sentences", "seed")
EXTRA_TEXT_SOURCES = ("wiki-markov",)


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: a compression config and optional fine-tuning after it.

    Example:
        >>> Stage(name="ft", config=None, finetune=TrainConfig(epochs=1)).finetune.epochs
        1
    """

    name: str
    config: Config | None
    finetune: TrainConfig | None = None


@dataclass(frozen=True)
class CalibrationData:
    """How a recipe widens text data for its compression stages' calibration.

    ``augment="words"`` adds ``copies`` versions of every training sentence with
    a ``rate`` of its words replaced by vocabulary words; ``"none"`` uses the data as given.

    Example:
        >>> CalibrationData(augment="words", copies=2).copies
        2
        >>> CalibrationData(augment="pixels")
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: calibration.augment='pixels' is invalid: expected 'words' or 'none'
    """

    augment: str = "none"
    copies: int = 1
    rate: float = WORD_RATE

    def __post_init__(self) -> None:
        if self.augment not in ("none", "words"):
            raise ConfigError("calibration.augment", self.augment, "'words' or 'none'")
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or not 1 <= self.copies <= 16:
            raise ConfigError("calibration.copies", self.copies, "an integer from 1 to 16")
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0 < self.rate <= 1:
            raise ConfigError("calibration.rate", self.rate, "a fraction of words in (0, 1]")


@dataclass(frozen=True)
class ExtraText:
    """General English that a recipe adds to the training split of text data (calibration and fine-tuning).

    ``source="wiki-markov"``: ``sentences`` sentences sampled with ``seed`` from the Wikipedia trigram
    model of essential-generators (:func:`deepshrink.data.wiki_markov.wiki_markov_sentences`).

    Example:
        >>> ExtraText(sentences=3000).source
        'wiki-markov'
        >>> ExtraText(sentences=0)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: extra_text.sentences=0 is invalid: expected an integer from 1 to 200000
    """

    source: str = "wiki-markov"
    sentences: int = 3000
    seed: int = 0

    def __post_init__(self) -> None:
        from .data.wiki_markov import MAX_SENTENCES

        if self.source not in EXTRA_TEXT_SOURCES:
            raise ConfigError("extra_text.source", self.source, " or ".join(repr(s) for s in EXTRA_TEXT_SOURCES))
        if isinstance(self.sentences, bool) or not isinstance(self.sentences, int) or not 1 <= self.sentences <= MAX_SENTENCES:
            raise ConfigError("extra_text.sentences", self.sentences, f"an integer from 1 to {MAX_SENTENCES}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("extra_text.seed", self.seed, "a non-negative integer")


@dataclass(frozen=True)
class Recipe:
    """A named list of stages.

    Example:
        >>> r = recipe_from_dict({"name": "ft-only", "stages": [{"finetune": {"epochs": 1}}]})
        >>> len(r.stages)
        1
    """

    name: str
    stages: tuple[Stage, ...]
    description: str = ""
    distill: KD | None = None
    calibration: CalibrationData | None = None
    extra_text: ExtraText | None = None

    def to_dict(self) -> dict[str, Any]:
        stages = []
        for s in self.stages:
            entry: dict[str, Any] = {"name": s.name}
            if s.config is not None:
                entry["config"] = config_to_dict(s.config)
            if s.finetune is not None:
                entry["finetune"] = {k: v for k, v in config_to_dict(s.finetune).items() if k not in ("type", "version")}
            stages.append(entry)
        out: dict[str, Any] = {"name": self.name, "description": self.description, "stages": stages}
        if self.distill is not None:
            out["distill"] = {k: v for k, v in config_to_dict(self.distill).items() if k not in ("type", "version")}
        if self.calibration is not None:
            out["calibration"] = {"augment": self.calibration.augment, "copies": self.calibration.copies, "rate": self.calibration.rate}
        if self.extra_text is not None:
            out["extra_text"] = {"source": self.extra_text.source, "sentences": self.extra_text.sentences, "seed": self.extra_text.seed}
        return out


def _section(data: dict[str, Any], key: str, fields: tuple[str, ...], cls: Any, example: str) -> Any:
    """The recipe's optional ``key`` mapping built as ``cls``; ConfigError names a non-mapping or an unknown field."""
    raw = data.get(key)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(key, raw, f"a mapping such as {example}")
    for name in raw:
        if name not in fields:
            raise ConfigError(f"{key}.{name}", raw[name], f"one of the {key} fields: " + ", ".join(fields))
    return cls(**raw)


def recipe_from_dict(data: Any) -> Recipe:
    """Validate and build a recipe from parsed YAML/JSON.

    Example:
        >>> recipe_from_dict({"name": "x", "stages": []})
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: stages=[] is invalid: expected a non-empty list of stages
    """
    if not isinstance(data, dict):
        raise ConfigError("recipe", type(data).__name__, "a mapping with 'name' and 'stages'")
    for key in data:
        if key not in _RECIPE_KEYS:
            raise ConfigError(key, data[key], "a recipe field: " + ", ".join(_RECIPE_KEYS))
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError("stages", stages_raw, "a non-empty list of stages")
    stages = []
    for i, raw in enumerate(stages_raw):
        if not isinstance(raw, dict):
            raise ConfigError(f"stages[{i}]", raw, "a mapping with 'config' and/or 'finetune'")
        for key in raw:
            if key not in _STAGE_KEYS:
                raise ConfigError(f"stages[{i}].{key}", raw[key], "a stage field: " + ", ".join(_STAGE_KEYS))
        config = config_from_dict(raw["config"]) if raw.get("config") is not None else None
        if config is not None:
            verb_for(config)  # refuse now a config no verb can apply
        ft_raw = raw.get("finetune")
        finetune = None
        if ft_raw is not None:
            if not isinstance(ft_raw, dict):
                raise ConfigError(f"stages[{i}].finetune", ft_raw, "a mapping of TrainConfig fields")
            ft = config_from_dict({"type": "train", **ft_raw})
            assert isinstance(ft, TrainConfig)
            finetune = ft
        if config is None and finetune is None:
            raise ConfigError(f"stages[{i}]", raw, "a 'config', a 'finetune', or both")
        stages.append(Stage(name=str(raw.get("name", f"stage{i}")), config=config, finetune=finetune))
    name = data.get("name", "recipe")
    if not isinstance(name, str):
        raise ConfigError("name", name, "a string")
    distill = None
    if data.get("distill") is not None:
        if not isinstance(data["distill"], dict):
            raise ConfigError("distill", data["distill"], "a mapping of KD fields (temperature, alpha)")
        kd = config_from_dict({"type": "kd", **data["distill"]})
        assert isinstance(kd, KD)
        distill = kd
    calibration = _section(data, "calibration", _CALIBRATION_KEYS, CalibrationData, "{augment: words, copies: 1}")
    extra_text = _section(data, "extra_text", _EXTRA_TEXT_KEYS, ExtraText, "{source: wiki-markov, sentences: 3000}")
    return Recipe(name=name, stages=tuple(stages), description=str(data.get("description", "")), distill=distill,
                  calibration=calibration, extra_text=extra_text)


def builtin_recipes() -> list[str]:
    """Names of the ready recipes in ``recipes/``.

    Example:
        >>> isinstance(builtin_recipes(), list)
        True
    """
    if not RECIPE_DIR.is_dir():
        return []
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe from a YAML file path or a built-in name; SpecError lists the names.

    Example:
        >>> load_recipe("no-such-recipe")
        Traceback (most recent call last):
        ...
        deepshrink.errors.SpecError: unknown recipe 'no-such-recipe': not a file, and not a built-in recipe (built-in: ...)
    """
    path = Path(name_or_path)
    if not path.is_file():
        candidate = RECIPE_DIR / f"{name_or_path}.yaml"
        if not candidate.is_file():
            names = ", ".join(builtin_recipes()) or "none"
            raise SpecError(f"unknown recipe {str(name_or_path)!r}: not a file, and not a built-in recipe (built-in: {names})")
        path = candidate
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read recipe {path}: {exc}") from None
    return recipe_from_dict(data)


@dataclass
class RecipeReport:
    """What each stage did and the validation metrics after it.

    Example:
        >>> RecipeReport(recipe="x").to_dict()["recipe"]
        'x'
    """

    recipe: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    # What the stages calibrated and fine-tuned on: the data's name and training-split size, and the
    # recipe's extra text when it added some.
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "data": self.data, "stages": self.stages, "seconds": self.seconds}


def _calibration_data(model: nn.Module, data: DataBundle, calibration: CalibrationData | None) -> DataBundle:
    """The data the compression stages calibrate on: ``data``, widened by word replacement when the recipe asks."""
    if calibration is None or calibration.augment == "none":
        return data
    if data.task != "text":
        raise ConfigError("calibration.augment", calibration.augment,
                          f"'none' for {data.task} data ({data.name}): word replacement widens text data only")
    words, weights = model_word_draws(model)
    return widen_text_data(data, words, copies=calibration.copies, rate=calibration.rate, weights=weights)


def _with_extra_text(data: DataBundle, extra: ExtraText | None) -> DataBundle:
    """``data`` whose training split also holds the recipe's extra sentences, interleaved (text data only)."""
    if extra is None:
        return data
    if data.task != "text":
        raise ConfigError("extra_text", extra.source, f"no extra_text for {data.task} data ({data.name}): it adds sentences to text data only")
    from .data.text_augment import interleave_sentences
    from .data.wiki_markov import wiki_markov_sentences

    return interleave_sentences(data, wiki_markov_sentences(extra.sentences, seed=extra.seed), source=extra.source)


def run_recipe(
    model: nn.Module,
    data: DataBundle,
    recipe: Recipe | str | Path,
    *,
    example_inputs: tuple[Any, ...] | None = None,
    callbacks: list[Callback] | None = None,
    train_overrides: dict[str, Any] | None = None,
) -> RecipeReport:
    """Run every stage of a recipe on ``model`` in place; returns a report.

    ``train_overrides`` changes fields of every fine-tuning stage (e.g. ``{"progress": False}``).

    Example:
        >>> import deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:100")
        >>> model = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> r = ds.run_recipe(model, data, recipe_from_dict({"name": "ft", "stages": [{"finetune": {"epochs": 1, "progress": False}}]}))
        >>> r.stages[0]["name"]
        'stage0'
    """
    from .train.engine import evaluate, finetune

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    report = RecipeReport(recipe=recipe.name)
    started = time.perf_counter()
    data = _with_extra_text(data, recipe.extra_text)
    report.data = {"name": data.name, "train": len(data.train)}  # type: ignore[arg-type]
    if "extra_text" in data.meta:
        report.data["extra_text"] = data.meta["extra_text"]
    objective = None
    if recipe.distill is not None and data.task == "classification":
        from .distill.losses import distillation_objective

        teacher = copy.deepcopy(model)  # the model as it was before compression
        objective = distillation_objective(teacher, recipe.distill.temperature, recipe.distill.alpha)
    reference = None
    if data.task == "text":
        from .distill.embedding import embedding_objective

        # Text data carry no labels: fine-tuning recovers a compressed embedding model by
        # matching the model as it was before the recipe (its embeddings and token states).
        reference = copy.deepcopy(model)
        objective = embedding_objective(reference)
    calibration_data = _calibration_data(model, data, recipe.calibration)
    for stage in recipe.stages:
        entry: dict[str, Any] = {"name": stage.name}
        t0 = time.perf_counter()
        if stage.config is not None:
            verb = verb_for(stage.config)
            result = verb(model, stage.config, data=calibration_data, example_inputs=example_inputs)
            entry["method"] = result.method
            entry["report"] = result.to_dict()
        if stage.finetune is not None:
            ft = stage.finetune.replace(**(train_overrides or {}))
            stage_callbacks = list(callbacks or [])
            hook = getattr(stage.config, "training_callbacks", None)
            if callable(hook):
                stage_callbacks += list(hook(model))
            out = finetune(model, data, ft, stage_callbacks, objective=objective)
            entry["finetune"] = {"steps": out["steps"], "seconds": out["seconds"], "val": out["val"]}
        if data.task == "classification" and len(data.val) > 0:  # type: ignore[arg-type]
            entry["val"] = evaluate(model, data.val)
        elif reference is not None and len(data.val) > 0:  # type: ignore[arg-type]
            from .train.embeddings import embedding_similarity

            entry["val"] = embedding_similarity(model, reference, data.val)
        entry["seconds"] = time.perf_counter() - t0
        report.stages.append(entry)
    report.seconds = time.perf_counter() - started
    return report
