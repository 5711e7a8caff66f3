"""Stratified K-fold cross-validation (engine): folds, the summary, the fold runs, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from finetune.cli import recipe_app
from finetune.crossval import CrossValidation
from finetune.errors import UserError
from finetune.evaluation.folds import fold_indices, summarise
from finetune.run import Run
from recipes.customer_service import recipe as customer_service
from recipes.medical_risk import recipe as medical


def test_folds_are_stratified_disjoint_and_cover_every_row():
    labels = ["a"] * 30 + ["b"] * 12 + ["c"] * 6
    folds = fold_indices(labels, 3, seed=0)
    held = [i for _, rows in folds for i in rows]
    assert sorted(held) == list(range(len(labels)))  # each row held out exactly once
    for train, rows in folds:
        assert not set(train) & set(rows)
        assert sorted(labels[i] for i in rows).count("c") == 2  # same class shares per fold
        assert sorted(labels[i] for i in rows).count("b") == 4
    assert fold_indices(labels, 3, seed=0) == folds  # seeded
    assert fold_indices(labels, 3, seed=1) != folds
    with pytest.raises(UserError, match="--folds 7 needs at least 7 examples of every class"):
        fold_indices(labels, 7, seed=0)


def test_summary_is_the_mean_and_sample_std_of_the_folds():
    folds = [
        {
            "fold": i,
            "folder": f"fold-{i}",
            "accuracy": acc,
            "recall": 0.5,
            "f1": 0.5,
            "auc": None if i == 3 else acc,
            "n_train": 10,
            "n_val": 1,
            "n_eval": 4,
            "best_epoch": 1,
            "baselines": {"base": {"accuracy": 1 - acc, "recall": 0, "f1": 0, "auc": 0.5}},
        }
        for i, acc in [(1, 0.6), (2, 0.8), (3, 0.7)]
    ]
    metrics = summarise(folds)
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["accuracy_std"] == pytest.approx(np.std([0.6, 0.8, 0.7], ddof=1))
    assert metrics["auc"] == pytest.approx(0.7)  # the undefined fold is left out
    assert metrics["baselines"]["base"]["accuracy"] == pytest.approx(0.3)
    assert metrics["n_eval"] == 12 and metrics["n_folds"] == 3
    assert [f["accuracy"] for f in metrics["folds"]] == [0.6, 0.8, 0.7]


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory, mixed_table):
    path = tmp_path_factory.mktemp("records") / "records.csv"
    frame = mixed_table(60, 3)
    frame.insert(0, "patient_id", [f"P{i:04d}" for i in range(len(frame))])
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def crossval(tiny_model_dir, mixed_csv, tmp_path_factory):
    config = medical.config(
        data={"path": str(mixed_csv), "label_column": "outcome", "positive_label": "sick"},
        model={"name": str(tiny_model_dir), "lora_r": 4},
        train={"max_steps": 2, "batch_size": 8, "eval_batch_size": 32},
        eval={"folds": 3},
        output=str(tmp_path_factory.mktemp("cv") / "run"),
    )
    with pytest.warns(UserWarning, match="dropped column 'patient_id'"):
        return medical.train(config, show_progress=False)


def test_crossval_writes_one_complete_run_per_fold_and_a_summary(crossval):
    assert isinstance(crossval, CrossValidation)
    folder, metrics = crossval.folder, crossval.metrics
    assert [p.name for p in crossval.fold_folders] == ["fold-1", "fold-2", "fold-3"]
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    per_fold = [json.loads((p / "metrics.json").read_text()) for p in crossval.fold_folders]
    assert sum(m["n_eval"] for m in per_fold) == 60 == metrics["n_eval"]
    for key in ("accuracy", "recall", "f1", "auc", "specificity", "brier"):
        values = [m[key] for m in per_fold]
        assert metrics[key] == pytest.approx(np.mean(values)), key
        assert metrics[f"{key}_std"] == pytest.approx(np.std(values, ddof=1)), key
    for name in ("logistic_regression", "gradient_boosting", "embedding_logreg"):
        values = [m["baselines"][name]["auc"] for m in per_fold]
        assert metrics["baselines"][name]["auc"] == pytest.approx(np.mean(values))
        assert metrics["baselines"][name]["auc_std"] == pytest.approx(np.std(values, ddof=1))
    point = metrics["operating_point"]
    assert point["target_recall"] == 0.9 and "threshold" not in point  # never averaged
    # Each fold's own threshold, chosen on its validation rows, judged on its held-out fold.
    assert point["thresholds"] == [m["operating_point"]["threshold"] for m in per_fold]
    assert point["recall"] == pytest.approx(
        np.mean([m["operating_point"]["recall"] for m in per_fold])
    )
    # The raw columns carry the signal: the logistic regression finds it in every fold.
    assert metrics["baselines"]["logistic_regression"]["auc"] > 0.8


def test_crossval_report_and_fold_runs(crossval, mixed_csv):
    folder = crossval.folder
    report = (folder / "report.md").read_text()
    assert "mean ± standard deviation over 3 folds" in report
    assert "[fold-2](fold-2/report.md)" in report and "| specificity |" in report
    assert (folder / "plots/roc.png").is_file() and (folder / "plots/calibration.png").is_file()
    with np.load(folder / "scores.npz") as pooled:  # every row once, scored out of fold
        assert len(pooled["y_true"]) == 60 and pooled["fine-tuned (LoRA)"].shape == (60, 2)
    assert "eval:\n  target_recall: 0.9\n  folds: 3" in (folder / "config.yaml").read_text()
    fold_report = (folder / "fold-1" / "report.md").read_text()
    assert "## Records" in fold_report and "patient_id" in fold_report  # listed as dropped
    assert "P0001" not in fold_report and "P0001" not in report
    # A fold folder is an ordinary run: it reloads and predicts.
    fold_config = (folder / "fold-1" / "config.yaml").read_text()
    assert f"output: {folder / 'fold-1'}" in fold_config and "records.csv" in fold_config
    run = Run.load(folder / "fold-1")
    # (medical-risk reads the table's columns beside the text: it predicts table rows)
    rows = medical.read(mixed_csv, medical.load(folder / "fold-1").config, labelled=False)
    assert run.model_proba(rows).shape == (60, 2)
    # Each fold chose its delivered model on its own validation rows; the summary counts them.
    delivered = crossval.metrics["delivered"]
    assert sum(delivered["counts"].values()) == 3 and len(delivered["per_fold"]) == 3
    assert delivered["per_fold"][0] == run.metrics["delivered"]["name"]
    # (the medical recipe's default: on out-of-fold predictions of each fold's inner folds)
    assert "| delivered |" in report
    assert "Delivered model, chosen on out-of-fold predictions of inner folds" in report
    assert medical.load(folder / "fold-2").labels == ["well", "sick"]
    with pytest.raises(UserError, match="cross-validation summary with one model per fold"):
        medical.load(folder)


def test_folds_from_the_command_line_for_any_recipe(tiny_model_dir, small_csvs, tmp_path):
    """customer-service has no --folds flag; the engine option works through --set."""
    output = tmp_path / "cv"
    result = CliRunner().invoke(
        recipe_app(customer_service),
        [
            "train",
            "--data",
            str(small_csvs[0]),
            "--eval-data",
            str(small_csvs[1]),
            "--model",
            str(tiny_model_dir),
            "--max-steps",
            "1",
            "--set",
            "eval.folds=2",
            "--set",
            "model.lora_r=4",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    title = " ".join(result.output.split())  # rich wraps the table title
    assert "2-fold cross-validation on 78 examples (mean ± std)" in title
    assert "±" in result.output and "tfidf_logreg" in result.output
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["n_folds"] == 2 and metrics["average"] == "macro"
    pd.read_csv(output / "fold-1" / "predictions.csv")  # each fold kept its predictions


def test_folds_are_refused_where_the_split_is_by_time(tmp_path):
    """Pooling a time split into shuffled folds would train on the future: refused in one line,
    before any data is read, however the option arrives."""
    from recipes.recommendation import recipe as recommendation

    with pytest.raises(UserError, match="splits? by time") as error:
        recommendation.config(eval={"folds": 3}, output=str(tmp_path / "cv"))
    assert "\n" not in str(error.value)
    result = CliRunner().invoke(
        recipe_app(recommendation), ["train", "--set", "eval.folds=2", "--output", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "error: eval.folds is set, but the recommendation" in result.output
    assert not (tmp_path / "cv").exists()


def test_folds_in_worker_processes_match_folds_one_after_the_other(
    tiny_model_dir, mixed_csv, tmp_path
):
    """`eval.fold_workers`: folds trained in parallel processes give the figures the same
    folds give one after the other (up to the float rounding of a different thread count)."""
    summaries = {}
    for workers in (1, 2):
        config = medical.config(
            data={"path": str(mixed_csv), "label_column": "outcome", "positive_label": "sick"},
            model={"name": str(tiny_model_dir), "lora_r": 4},
            train={"max_steps": 2, "batch_size": 8, "eval_batch_size": 32, "select_folds": "0"},
            eval={"folds": 2, "fold_workers": workers},
            output=str(tmp_path / f"workers-{workers}"),
        )
        with pytest.warns(UserWarning, match="dropped column 'patient_id'"):
            summaries[workers] = medical.train(config, show_progress=False)
    serial, parallel = summaries[1].metrics, summaries[2].metrics
    for one, other in zip(serial["folds"], parallel["folds"], strict=True):
        assert one["best_epoch"] == other["best_epoch"]
        for key in ("accuracy", "f1", "auc", "brier"):
            assert one[key] == pytest.approx(other[key], abs=1e-4), key
    env = json.loads((summaries[2].folder / "environment.json").read_text())
    assert env["fold_workers"] == 2
    # Each fold folder is complete whichever process wrote it: it reloads and predicts as the
    # same fold trained in this process does.
    folders = [summaries[w].folder / "fold-2" for w in (1, 2)]
    rows = medical.read(mixed_csv, medical.load(folders[0]).config, labelled=False)
    serial_proba, parallel_proba = (Run.load(f).model_proba(rows) for f in folders)
    assert parallel_proba.shape == (60, 2)
    np.testing.assert_allclose(parallel_proba, serial_proba, atol=1e-4)
