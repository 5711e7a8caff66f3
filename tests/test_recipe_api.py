"""The recipe API: recipes found by entry point, one split hook (`Recipe.split -> Splits`) that
runs and cross-validation share, and the model's scores under one name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from finetune.cli import make_app
from finetune.data.tables import Examples
from finetune.errors import UserError
from finetune.evaluation.metrics import MODEL_NAME, choose_threshold
from finetune.recipe import TARGET_RECALL, EvalContext, Recipe, Splits
from finetune.registry import BUILT_IN, recipe_entries

WORDS = {"yes": ["great", "love", "perfect", "superb"], "no": ["awful", "broken", "bad", "poor"]}


def install(site: Path, monkeypatch, entries: str, name: str = "fifth-vertical") -> None:
    """What `pip install` leaves for a package declaring `finetune.recipes` entry points."""
    dist = site / f"{name.replace('-', '_')}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[finetune.recipes]\n{entries}\n")
    monkeypatch.syspath_prepend(str(site))


def test_a_fifth_recipe_registers_by_entry_point_and_trains(tiny_model_dir, tmp_path, monkeypatch):
    install(tmp_path / "site", monkeypatch, "ticket-urgency = fifth_recipe:recipe")
    app = make_app()
    listed = CliRunner().invoke(app, ["--help"]).output
    assert "ticket-urgency" in listed and "customer-service" in listed
    output = tmp_path / "run"
    args = ["ticket-urgency", "train", "--model", str(tiny_model_dir), "--max-steps", "2"]
    result = CliRunner().invoke(app, [*args, "--output", str(output)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["positive_label"] == "urgent" and metrics["n_eval"] == 16
    assert metrics["train_source"] == "tickets train" and metrics["eval_source"] == "tickets test"
    assert set(metrics["baselines"]) == {"tfidf_logreg"}
    assert (output / "report.md").read_text().startswith("# Support ticket urgency")


def test_installed_metadata_decides_which_recipes_exist(tmp_path, monkeypatch):
    # This package's metadata without the group (a checkout not reinstalled): the built-ins.
    assert set(BUILT_IN) <= set(recipe_entries())
    # With it, exactly what the installed packages register.
    entries = "customer-service = recipes.customer_service:recipe\nfifth = fifth_recipe:recipe"
    install(tmp_path / "ours", monkeypatch, entries, name="finetune-kit")
    install(tmp_path / "theirs", monkeypatch, "other = other_package:recipe")
    assert recipe_entries() == {
        "other": "other_package:recipe",
        "customer-service": "recipes.customer_service:recipe",
        "fifth": "fifth_recipe:recipe",
    }


def test_a_broken_recipe_package_is_one_warning_not_a_broken_cli(tmp_path, monkeypatch, capsys):
    install(tmp_path / "site", monkeypatch, "broken = no_such_module_here:recipe")
    app = make_app()
    warning = capsys.readouterr().err
    assert warning.strip().splitlines() == [
        "warning: recipe broken (no_such_module_here:recipe) is left out: "
        "No module named 'no_such_module_here'"
    ]
    listed = CliRunner().invoke(app, ["--help"]).output
    assert "customer-service" in listed and "broken" not in listed


def examples(n: int, seed: int, source: str) -> Examples:
    rng = np.random.default_rng(seed)
    labels = ["yes" if rng.random() < 0.5 else "no" for _ in range(n)]
    texts = [f"{rng.choice(WORDS[label])} thing {seed}-{i}" for i, label in enumerate(labels)]
    return Examples(texts, labels, source)


class ByTime(Recipe):
    """Validation rows of its own (as a split by time would give), not the engine's hold-out."""

    name = "by-time"
    title = "Recipe with its own validation rows"
    defaults = {"data": {"positive_label": "yes"}, "train": {"epochs": 1, "batch_size": 8}}
    baselines = ("tfidf_logreg",)
    flags = (TARGET_RECALL,)
    seen: dict = {}

    def split(self, config):
        return Splits(
            train=examples(40, 1, "early rows"),
            evaluation=examples(30, 3, "latest rows"),
            validation=examples(20, 2, "later rows"),
        )

    def extra_report(self, context: EvalContext):
        self.seen["context"] = context
        return {}, []


def test_the_recipes_validation_rows_choose_the_threshold(tiny_model_dir, tmp_path):
    recipe = ByTime()
    config = recipe.config(
        model={"name": str(tiny_model_dir), "lora_r": 4},
        eval={"target_recall": 0.9},
        train={"max_steps": 2},
        output=str(tmp_path / "run"),
    )
    run = recipe.train(config, show_progress=False)
    metrics, validation = run.metrics, recipe.split(config).validation
    # data.val_fraction holds nothing out of the 40 training rows: the 20 given rows validate.
    assert (metrics["n_train"], metrics["n_val"], metrics["n_eval"]) == (40, 20, 30)
    y_val = np.array([run.labels.index(label) for label in validation.labels])
    expected = choose_threshold(y_val, run.model_proba(validation.texts)[:, 1], 0.9)
    assert metrics["finetuned"]["operating_point"]["threshold"] == pytest.approx(expected, abs=5e-3)
    context = recipe.seen["context"]
    assert context.train.texts[40:] == validation.texts  # every training row, validation last
    assert context.model_scores is context.scores[MODEL_NAME]
    assert np.allclose(context.model_scores, run.model_proba(context.evaluation.texts), atol=1e-4)


class Grouped(ByTime):
    """Cross-validation folds of its own, e.g. all rows of one patient in the same fold."""

    def split(self, config):
        splits = super().split(config)
        n = len(splits.pooled())
        held = [list(range(k, n, 3)) for k in range(3)]
        splits.folds = [(sorted(set(range(n)) - set(out)), out) for out in held]
        return splits


def test_cross_validation_uses_the_recipes_folds(tmp_path, monkeypatch):
    from finetune import crossval

    seen = []

    def run_folds(recipe, config, examples, splits, *rest):
        seen.append((len(examples), splits))
        raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr(crossval, "_run_folds", run_folds)
    recipe = Grouped()
    config = recipe.config(eval={"folds": 3}, output=str(tmp_path / "cv"))
    with pytest.raises(KeyboardInterrupt):
        crossval.cross_validate(recipe, config, show_progress=False)
    ((n_rows, folds),) = seen
    assert n_rows == 90 and folds == recipe.split(recipe.config()).folds
    with pytest.raises(UserError, match="the recipe's split defines 3 folds; pass --folds 3"):
        crossval.cross_validate(recipe, recipe.config(eval={"folds": 4}), show_progress=False)
