"""train.select_folds: the delivered model, its calibration and its threshold are chosen on
out-of-fold predictions of inner folds over the training rows, never on the evaluation rows.

Tiny random BERT on two-class intents (refunds against the rest), 3 inner folds, one step per
fold: every method's out-of-fold probabilities are checked against what the run decided."""

from __future__ import annotations

import numpy as np
import pytest
from test_selection import (
    class_prior,
    saved_scores,
    train,
    two_class_settings,
    with_baselines,
)

from finetune.evaluation.calibration import choose_calibrator
from finetune.evaluation.metrics import MODEL_NAME
from finetune.evaluation.selection import MARGIN, OutOfFold, choose_delivered
from finetune.reporting.report import delivery_lines


def folds_settings(model_dir, folder, output, flip=False, **eval_):
    settings = two_class_settings(model_dir, folder, output, flip=flip, **eval_)
    settings["train"] = {**settings["train"], "select_folds": "3", "epochs": 1}
    settings["data"] = {**settings["data"], "val_fraction": 0.0}
    settings["model"] = {**settings["model"], "head_init": "random"}  # any baseline beats it
    return settings


@pytest.fixture(scope="module")
def oof_runs(tiny_model_dir, tmp_path_factory):
    """The same run twice, the second with some evaluation labels flipped."""
    root = tmp_path_factory.mktemp("oof")
    runs = []
    for flip in (False, True):
        settings = folds_settings(
            tiny_model_dir, root / f"data-{flip}", root / f"run-{flip}", flip, target_recall=0.8
        )
        runs.append(train(with_baselines("tfidf_logreg", class_prior), settings))
    return runs


def test_the_choice_is_made_on_out_of_fold_predictions_of_the_training_rows(oof_runs):
    run = oof_runs[0]
    metrics = run.metrics
    delivered = metrics["delivered"]
    n_train = metrics["n_train"]
    assert metrics["n_val"] == 0 and n_train > 0
    chosen_on = f"out-of-fold predictions of 3 inner folds over {n_train} training rows"
    assert delivered["chosen_on"] == chosen_on
    # Every method has out-of-fold figures, pooled and per fold.
    assert set(delivered["out_of_fold"]) == {"model", "tfidf_logreg", "class_prior"}
    for figures in delivered["out_of_fold"].values():
        assert len(figures["per_fold"]) == 3
    assert delivered["validation"]["model"] == delivered["out_of_fold"]["model"]["pooled"]
    # The class prior ranks nothing: the words (tfidf) win out of fold, and are delivered.
    oof = delivered["out_of_fold"]
    assert oof["tfidf_logreg"]["pooled"] - oof["model"]["pooled"] > MARGIN
    assert delivered["name"] == "tfidf_logreg"
    np.testing.assert_allclose(saved_scores(run.folder)["delivered"][:, 1] >= 0, True)
    # The calibration and the threshold were fitted on the same training rows.
    assert metrics["calibration"]["fitted_on"] == chosen_on
    assert metrics["operating_point"]["chosen_on"] == chosen_on
    if run.served.calibrator is not None:
        assert run.served.calibrator.n_fitted == n_train
    report = (run.folder / "report.md").read_text()
    assert f"chosen on {chosen_on}" in report
    assert "threshold chosen on out-of-fold predictions" in report


def test_the_evaluation_labels_move_nothing_that_was_chosen(oof_runs):
    first, second = (run.metrics for run in oof_runs)
    assert first["finetuned"]["auc"] != second["finetuned"]["auc"]  # they did change
    assert first["delivered"] == second["delivered"]
    for key in ("method", "fitted_on", "cross_fitted_log_loss", "note"):
        assert first["calibration"].get(key) == second["calibration"].get(key), key
    assert first["operating_point"]["threshold"] == second["operating_point"]["threshold"]


def test_a_baseline_must_also_lead_in_the_mean_over_folds():
    """A pooled out-of-fold lead that no fold shows is not enough: the fine-tuned model stays."""
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 30)
    folds = np.repeat([0, 1, 2], 20)
    labels = ["no", "yes"]
    signal = y + rng.normal(0, 0.8, len(y))
    # The model ranks within each fold exactly like the baseline, but its folds are offset
    # from one another, which lowers its pooled AUC only.
    model = 1 / (1 + np.exp(-(signal + 3 * folds)))
    base = 1 / (1 + np.exp(-signal))
    two = {
        MODEL_NAME: np.column_stack([1 - model, model]),
        "base": np.column_stack([1 - base, base]),
    }
    name, decided, _ = choose_delivered(two, y, labels, "auc", "best", {"base"}, folds)
    oof = decided["out_of_fold"]
    assert oof["base"]["pooled"] - oof["model"]["pooled"] > MARGIN  # pooled, base leads
    assert oof["base"]["fold_mean"] == pytest.approx(oof["model"]["fold_mean"])
    assert name == MODEL_NAME
    assert choose_delivered(two, y, labels, "auc", "best", {"base"})[0] == "base"  # pooled only
    # A lead in every fold is delivered.
    better = np.column_stack([0.95 - y * 0.9, y * 0.9 + 0.05])
    name, _, lines = choose_delivered(
        {MODEL_NAME: two[MODEL_NAME], "base": better}, y, labels, "auc", "best", {"base"}, folds
    )
    assert name == "base" and "out-of-fold" in lines[0]
    assert OutOfFold(two, y, folds).describe().startswith("out-of-fold predictions of 3 inner")


def test_calibration_candidates_are_cross_fitted_over_the_given_folds():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 90)
    p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 90), 0.01, 0.99)
    folds = np.arange(90) % 3
    _, a = choose_calibrator("auto", p, y, seed=0, folds=folds, fitted_on="the folds")
    _, b = choose_calibrator("auto", p, y, seed=99, folds=folds, fitted_on="the folds")
    assert a == b and a["fitted_on"] == "the folds"  # the folds, not the seed, split the rows


def test_the_report_line_names_the_rows_that_chose():
    metrics = {
        "delivered": {
            "name": "model",
            "margin": MARGIN,
            "metric": "auc",
            "validation": {"model": 0.8},
            "chosen_on": "validation (40 rows)",
        },
        "calibration": {"method": "none"},
        "operating_point": {"threshold": 0.3},
    }
    assert delivery_lines(metrics)[-1] == (
        "Delivered model, calibration and threshold chosen on 40 validation rows."
    )


def test_auto_with_a_number_of_folds_is_for_small_tables_only():
    from finetune.config import select_folds

    assert select_folds("auto:3", 200) == 3 and select_folds("auto:3", 5_000) == 0


def test_the_delivery_line_reads_the_figure_of_the_method_a_recipe_names():
    """A recipe may record its fine-tuned variant by name (recommendation: the re-ranker)."""
    metrics = {
        "delivered": {
            "name": "model",
            "method": "two_tower_reranked",
            "metric": "ndcg@10",
            "margin": 0.005,
            "validation": {"two_tower_reranked": 0.206, "item_knn": 0.196, "two_tower": 0.171},
        }
    }
    assert "(fine-tuned 0.206, best baseline 0.196)" in delivery_lines(metrics)[0]
