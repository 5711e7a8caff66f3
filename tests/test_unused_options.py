"""Options a recipe's runs never read are refused with one line, not ignored without a word,
and `train --help` offers only what a recipe reads, with its own defaults."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from finetune.cli import app
from finetune.config import dotted_to_nested
from finetune.errors import UserError
from finetune.registry import load_entry, recipe_entries

RECIPES = {name: load_entry(entry) for name, entry in recipe_entries().items()}
# A value other than the engine's default for every option some recipe leaves unread.
VALUES = {
    "data.path": "x.csv",
    "data.eval_path": "y.csv",
    "data.text_column": "message",
    "data.label_column": "intent",
    "data.val_fraction": 0.3,
    "data.eval_fraction": 0.3,
    "data.positive_label": "yes",
    "data.memory_map": True,
    "train.class_weight": "auto",
    "train.select_metric": "loss",
    "train.select_folds": "3",
    "eval.folds": 3,
    "eval.target_recall": 0.8,
    "eval.calibrate": "platt",
    "eval.blend": ["tfidf_logreg"],
    "image": {"image.size": 64},
    "options.prompt_column": "msg",
    "options.response_column": "answer",
    "options.intent_column": "topic",
    "options.train_rows": 10,
    "options.val_rows": 5,
    "options.eval_rows": 5,
    "options.decode_batch": 8,
    "options.max_new_tokens": 8,
    "options.system": "Be brief.",
    "options.retrieved_reply": True,
    "options.min_reply_share": 0.5,
    "options.retrieval_model": "mpnet",
}
TASKS = {"customer-service": ({"options": {"task": "intent"}}, {"options": {"task": "reply"}})}


def _cases() -> list[tuple[str, dict, str]]:
    cases = []
    for name, recipe in RECIPES.items():
        for task in TASKS.get(name, ({},)):
            config = recipe.config(**task)
            for key in recipe.unused(config):
                cases.append((name, task, key))
    return cases


@pytest.mark.parametrize(("name", "task", "key"), _cases())
def test_an_unread_option_is_refused_with_one_line(name, task, key):
    value = VALUES[key]
    dotted = value if isinstance(value, dict) else {key: value}
    overrides = dotted_to_nested(dotted)
    overrides["options"] = {**task.get("options", {}), **overrides.get("options", {})}
    named = next(iter(dotted))
    with pytest.raises(UserError, match=rf"^{named} is set, but .+\.$"):
        RECIPES[name].config(**{k: v for k, v in overrides.items() if v})


def test_every_recipe_leaves_something_unread_and_reads_its_defaults():
    # Text recipes never read the image section; the image recipe reads no memory map.
    for name, recipe in RECIPES.items():
        for task in TASKS.get(name, ({},)):
            config = recipe.config(**task)
            assert recipe.unused(config), name
            for quick in (False, True):  # defaults and --quick are accepted as they are
                recipe.refuse_unused(recipe.config(quick=quick, **task))
    cs = RECIPES["customer-service"]
    reply, intent = (cs.unused(cs.config(**task)) for task in TASKS["customer-service"][::-1])
    assert "data.text_column" in reply and "data.text_column" not in intent
    assert "options.prompt_column" in intent and "options.prompt_column" not in reply


def test_a_run_given_a_changed_config_after_resolving_is_refused_too(tmp_path):
    import dataclasses

    recipe = RECIPES["recommendation"]
    config = recipe.config(output=str(tmp_path / "r"))
    config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, folds=3))
    with pytest.raises(UserError, match="^eval.folds is set, but the recommendation recipe"):
        recipe.train(config, show_progress=False)


runner = CliRunner()


def _help(recipe: str) -> str:
    """`train --help`, its wrapped lines joined, the box drawing left out."""
    output = runner.invoke(app, [recipe, "train", "--help"]).output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split()) + " "


def test_train_help_offers_what_the_recipe_reads_with_its_defaults():
    recommendation = _help("recommendation")
    for flag in ("--data ", "--eval-data", "--text-column", "--label-column", "--memory-map"):
        assert flag not in recommendation, flag
    assert "--calibrate" not in recommendation and "--interactions" in recommendation
    assert "--text-column" not in _help("medical-risk")
    image = _help("image-classification")
    assert "Default: efficientnet-lite0." in image and "Image folder" in image
    assert "A table's column of image paths. Default: path." in image
    assert "--memory-map" not in image
    service = _help("customer-service")
    assert "Default: minilm (reply task: smollm2-135m)." in service
    assert "--memory-map" in service and "image" not in service.lower()


@pytest.fixture
def trained(monkeypatch):
    """The config `train` would run with, instead of running it."""
    seen = {}

    def capture(self, config=None, show_progress=True):
        seen["config"] = config
        raise SystemExit(0)

    for recipe in RECIPES.values():
        monkeypatch.setattr(type(recipe), "train", capture)
    return seen


def test_a_hidden_flag_still_gets_the_recipes_line(trained):
    result = runner.invoke(app, ["recommendation", "train", "--data", "ratings.csv"])
    assert result.exit_code == 2 and "config" not in trained
    assert result.output.strip() == (
        "error: data.path is set, but the recommendation recipe splits an interaction log by "
        "time: pass --interactions PATH (and --items PATH) instead."
    )


def test_set_is_seen_while_the_defaults_are_resolved(trained):
    # options.task=reply switches to the reply task's defaults, as --task reply does.
    result = runner.invoke(app, ["customer-service", "train", "--set", "options.task=reply"])
    assert result.exit_code == 0, result.output
    config = trained["config"]
    assert config.model.name == "smollm2-135m" and config.options.dataset == "bitext"
    # --set wins over a flag; a seed of 0 is a seed.
    args = ["--epochs", "2", "--set", "train.epochs=3", "--seed", "0"]
    result = runner.invoke(app, ["customer-service", "train", *args])
    assert result.exit_code == 0, result.output
    assert trained["config"].train.epochs == 3 and trained["config"].train.seed == 0
