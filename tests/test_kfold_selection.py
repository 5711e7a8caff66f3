"""train.select_folds: inner folds of the training rows choose the number of epochs.

Tiny random BERT on the small intent CSVs: the chosen epoch is the best of the folds' mean
figure, only training rows enter the folds, a seed gives one choice, and when epoch 0 wins
the delivered model is the starting point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finetune.config import select_folds
from finetune.errors import UserError
from finetune.training import kfold
from recipes.customer_service import recipe


def folds_config(model_dir: Path, data: tuple[Path, Path], output: Path, **train):
    return recipe.config(
        data={"path": str(data[0]), "eval_path": str(data[1])},
        model={"name": str(model_dir), "lora_r": 4, "lora_alpha": 8},
        train={"epochs": 2, "batch_size": 8, "eval_batch_size": 32, "select_folds": "3", **train},
        output=str(output),
    )


@pytest.fixture(scope="module")
def folds_run(tiny_model_dir, small_csvs, tmp_path_factory):
    """A run with 3 inner folds, recording the items every training loop was handed."""
    seen: list[list] = []
    original = kfold.TrainingLoop.__init__

    def spy(self, model, train, validation, *args, **kwargs):
        seen.append(list(train.ids) + list(validation.ids))
        original(self, model, train, validation, *args, **kwargs)

    kfold.TrainingLoop.__init__ = spy
    try:
        output = tmp_path_factory.mktemp("folds") / "run"
        run = recipe.train(folds_config(tiny_model_dir, small_csvs, output), show_progress=False)
    finally:
        kfold.TrainingLoop.__init__ = original
    return run, seen


def test_chosen_epoch_is_the_best_fold_mean(folds_run):
    run, _ = folds_run
    selection = json.loads((run.folder / "metrics.json").read_text())["selection"]
    assert selection["metric"] == "f1" and len(selection["fold_choices"]) == 3
    rows = selection["per_epoch"]
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    best = max(rows, key=lambda row: (row["mean"], -row["loss_mean"]))
    assert selection["chosen_epoch"] == best["epoch"]
    share = np.mean([c == selection["chosen_epoch"] for c in selection["fold_choices"]])
    assert selection["agreement"] == pytest.approx(share)
    report = (run.folder / "report.md").read_text()
    assert "3-fold inner cross-validation" in report


def test_only_training_rows_enter_the_folds(folds_run, small_csvs):
    run, seen = folds_run
    n_train = len(small_csvs[0].read_text().strip().splitlines()) - 1
    assert run.metrics["n_train"] == n_train and run.metrics["n_val"] == 0
    # Three folds (each sees every training row once, as training or held-out) + the final.
    assert len(seen) == 4 and all(len(items) == n_train for items in seen)
    final = {id(item) for item in seen[-1]}
    assert all({id(item) for item in items} == final for items in seen[:-1])


def test_same_seed_same_choice(folds_run, tiny_model_dir, small_csvs, tmp_path):
    run, _ = folds_run
    again = recipe.train(
        folds_config(tiny_model_dir, small_csvs, tmp_path / "again"), show_progress=False
    )
    first, second = run.metrics["selection"], again.metrics["selection"]
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    assert again.metrics["accuracy"] == run.metrics["accuracy"]


def test_when_epoch_0_wins_the_starting_point_is_delivered(tiny_model_dir, small_csvs, tmp_path):
    # A learning rate that wrecks every fine-tuned epoch: the probe start must win.
    config = folds_config(
        tiny_model_dir, small_csvs, tmp_path / "run", learning_rate=30.0, head_learning_rate=30.0
    )
    run = recipe.train(config, show_progress=False)
    assert run.metrics["selection"]["chosen_epoch"] == 0 and run.metrics["best_epoch"] == 0
    lora_b = [p for n, p in run.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.detach().abs().max()) == 0 for p in lora_b)  # LoRA as initialised
    probe = run.metrics["baselines"]["embedding_logreg"]["accuracy"]
    assert run.metrics["accuracy"] == pytest.approx(probe, abs=0.05)


def test_auto_and_bad_values():
    assert select_folds("auto", 1_999) == 5 and select_folds("auto", 2_000) == 0
    assert select_folds("0", 10) == 0 and select_folds("4", 10) == 4
    for bad in ("1", "-2", "many"):
        with pytest.raises(UserError, match="train.select_folds"):
            select_folds(bad, 10)
