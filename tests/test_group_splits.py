"""Splits by group: no patient (or site) on both sides of the evaluation hold-out, the
validation rows or any fold; --holdout-group evaluates on one site, or on each in turn."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from finetune.data.tables import Examples
from finetune.errors import UserError
from finetune.run import training_rows
from finetune.splits import group_folds, hold_out, split_rows
from recipes.medical_data import heart_frame
from recipes.medical_risk import recipe


def _apart(first: list[str], second: list[str]) -> None:
    """Every example's group is checked: none on both sides."""
    assert not set(first) & set(second)


def _examples(n: int = 300, seed: int = 0) -> Examples:
    rng = np.random.default_rng(seed)
    groups = [f"p{i}" for i in rng.integers(0, n // 3, n)]  # about 3 rows per patient
    labels = [str(v) for v in rng.choice(["yes", "no"], n, p=[0.3, 0.7])]
    return Examples([f"row {i}" for i in range(n)], labels, "synthetic", groups=groups)


def test_hold_out_validation_and_folds_keep_groups_apart():
    examples = _examples()
    kept, held = hold_out(examples, 0.2, seed=42)
    _apart(kept.groups, held.groups)
    assert 0.1 < len(held) / len(examples) < 0.3
    assert {"yes", "no"} <= set(held.labels)  # stratified as far as whole groups allow
    fit, val = split_rows(kept, 0.2, seed=7)
    _apart([kept.groups[i] for i in fit], [kept.groups[i] for i in val])
    assert sorted(fit + val) == list(range(len(kept)))
    folds = group_folds(examples.labels, examples.groups, 5, seed=42)
    assert sorted(i for _, out in folds for i in out) == list(range(len(examples)))
    for train, out in folds:
        _apart([examples.groups[i] for i in train], [examples.groups[i] for i in out])


def test_too_few_groups_is_one_clear_line():
    examples = Examples(["a"] * 6, ["yes", "no"] * 3, "tiny", groups=["x", "y", "z"] * 2)
    with pytest.raises(UserError, match="at least 5 groups"):
        group_folds(examples.labels, examples.groups, 5, seed=1)


def test_bundled_biopsy_is_split_by_patient():
    """MASS biopsy repeats patients (645 IDs, 699 rows): the ID never reaches a model, and no ID
    is on both sides of the hold-out, the validation rows or a fold."""
    config = recipe.config(options={"dataset": "biopsy"})
    splits = recipe.split(config)
    assert "ID" not in splits.train.features.columns
    assert len(set(splits.train.groups)) < len(splits.train)  # repeated patients
    _apart(splits.train.groups, splits.evaluation.groups)
    train, fit, val, _ = training_rows(splits, config)
    _apart([train.groups[i] for i in fit], [train.groups[i] for i in val])
    folds = recipe.split(replace(config, eval=replace(config.eval, folds=5)))
    pooled = folds.pooled()
    assert len(pooled) == 699 and len(folds.folds) == 5
    for rows, out in folds.folds:
        _apart([pooled.groups[i] for i in rows], [pooled.groups[i] for i in out])


def test_holdout_group_evaluates_on_one_hospital():
    sites = heart_frame()["dataset"]
    config = recipe.config(options={"dataset": "heart", "holdout_group": "Hungary"})
    splits = recipe.split(config)
    assert len(splits.evaluation) == int((sites == "Hungary").sum())
    assert len(splits.train) == int((sites != "Hungary").sum())
    assert "dataset" not in splits.train.features.columns  # the site is never a model input
    assert "Hungary" in splits.evaluation.source
    every = recipe.split(
        recipe.config(options={"dataset": "heart", "holdout_group": "each"}, eval={"folds": 4})
    )
    pooled = every.pooled()
    site_of = sites.tolist()
    for rows, out in every.folds:
        assert len({site_of[i] for i in out}) == 1  # one hospital held out per fold
        _apart([site_of[i] for i in rows], [site_of[i] for i in out])
    assert len(pooled) == len(sites)
    with pytest.raises(UserError, match="no group 'Mars'"):
        recipe.split(recipe.config(options={"dataset": "heart", "holdout_group": "Mars"}))


def test_group_column_errors_are_one_line(tmp_path, mixed_table):
    path = tmp_path / "records.csv"
    mixed_table(40, 3).to_csv(path, index=False)
    base = {"path": str(path), "label_column": "outcome", "positive_label": "sick"}
    with pytest.raises(UserError, match="no column 'clinic'"):
        recipe.split(recipe.config(data=base, options={"group_column": "clinic"}))
    with pytest.raises(UserError, match="--holdout-group needs"):
        recipe.split(recipe.config(data=base, options={"holdout_group": "A"}))


def test_each_site_held_out_in_turn_end_to_end(tiny_model_dir, mixed_table, tmp_path):
    frame = mixed_table(90, 5)
    frame["clinic"] = np.repeat(["north", "south", "west"], 30)
    path = tmp_path / "records.csv"
    frame.to_csv(path, index=False)
    config = recipe.config(
        data={"path": str(path), "label_column": "outcome", "positive_label": "sick"},
        model={"name": str(tiny_model_dir), "lora_r": 4},
        train={"max_steps": 2, "batch_size": 16},
        options={"group_column": "clinic", "holdout_group": "each"},
        output=str(tmp_path / "each"),
    )
    summary = recipe.train(config, show_progress=False)
    assert summary.metrics["n_folds"] == 3
    for fold, clinic in zip(summary.fold_folders, ["north", "south", "west"], strict=True):
        metrics = json.loads((fold / "metrics.json").read_text())
        assert metrics["n_eval"] == 30 and clinic in metrics["eval_source"]
        schema = json.loads((fold / "schema.json").read_text())
        assert "clinic" in schema["dropped"]
    assert pd.read_csv(summary.fold_folders[0] / "predictions.csv").shape[0] == 30


def test_a_run_on_the_heart_data_holds_out_one_hospital(tiny_model_dir, tmp_path):
    """The real four-hospital table end to end (tiny model): trained on three hospitals,
    evaluated on the fourth, the site never a model input, the report explaining scores."""
    config = recipe.config(
        options={"dataset": "heart", "holdout_group": "Switzerland"},
        model={"name": str(tiny_model_dir), "lora_r": 4},
        data={"max_length": 128},  # the tiny model's positions
        train={"max_steps": 2, "batch_size": 32},
        output=str(tmp_path / "heart"),
    )
    run = recipe.train(config, show_progress=False)
    assert run.metrics["n_eval"] == 123 and "Switzerland" in run.metrics["eval_source"]
    encoder = json.loads((run.folder / "adapter" / "features.json").read_text())
    read = [c["name"] for c in encoder["numeric"] + encoder["categorical"]]
    assert "dataset" not in read and "id" not in read and "cp" in read
    assert run.metrics["baselines"]["logistic_regression"]["auc"] > 0.7
    assert "plots/importance.png" in (run.folder / "report.md").read_text()


def test_inner_folds_keep_patients_apart(tiny_model_dir, mixed_table, tmp_path, monkeypatch):
    """The inner folds that choose the epoch and the delivered model hold out whole patients:
    every inner fold of a grouped run is checked."""
    from finetune.training import kfold

    frame = mixed_table(90, 5)
    frame["patient"] = [f"p{i // 3}" for i in range(90)]  # 3 records per patient
    path = tmp_path / "records.csv"
    frame.to_csv(path, index=False)
    seen, choose = [], kfold.choose_epochs

    def recording(model, rows, splits, *args, **kwargs):
        seen.append((rows, splits))
        return choose(model, rows, splits, *args, **kwargs)

    monkeypatch.setattr(kfold, "choose_epochs", recording)
    config = recipe.config(
        data={"path": str(path), "label_column": "outcome", "positive_label": "sick"},
        model={"name": str(tiny_model_dir), "lora_r": 4},
        train={"max_steps": 2, "batch_size": 16},
        options={"group_column": "patient"},
        output=str(tmp_path / "grouped"),
    )
    data = training_rows(recipe.split(config), config)
    recipe.train(config, show_progress=False)
    ((rows, splits),) = seen
    patients = [data[0].groups[i] for i in data[1]]  # the fit rows' patients, in order
    assert len(splits) == 3 and len(patients) == len(rows.ids)
    for train, held in splits:
        _apart([patients[i] for i in train], [patients[i] for i in held])
