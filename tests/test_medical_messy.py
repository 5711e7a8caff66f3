"""A table no one tuned on, as a new user brings it: a label column and a positive label,
quoted categories (some with commas), `?` for missing values, about 2% positives. The recipe
reads it, or refuses what it cannot read with one clear line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from finetune.cli import app
from finetune.errors import UserError
from recipes.medical_risk import recipe

runner = CliRunner()


def messy_table(path: Path, n: int = 1500, seed: int = 0, positive_rate: float = 0.02) -> Path:
    """Write a messy clinical export: numbers with `?` gaps, quoted categories with commas and
    stray spaces, an identifier column, ~`positive_rate` positives ("Readmitted")."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 95, n)
    creatinine = rng.lognormal(0, 0.35, n).round(2)
    ward = rng.choice(["Cardiology, North", "General Medicine", " Oncology ", "ICU"], n)
    score = 0.04 * (age - 60) + 2.0 * (creatinine - 1) + (ward == "ICU") * 1.0
    threshold = np.quantile(score + rng.normal(0, 0.6, n), 1 - positive_rate)
    outcome = np.where(score + rng.normal(0, 0.6, n) > threshold, "Readmitted", "Home")
    rows = []
    for i in range(n):
        rows.append(
            {
                "Patient ID": f"MRN{100000 + i}",
                "Age": "?" if rng.random() < 0.05 else str(age[i]),
                "Creatinine (mg/dL)": "?" if rng.random() < 0.1 else f"{creatinine[i]:.2f}",
                "Ward": ward[i],
                "Discharge": outcome[i],
            }
        )
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), quoting=csv.QUOTE_NONNUMERIC)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_recipe_reads_a_messy_export(tmp_path):
    path = messy_table(tmp_path / "export.csv")
    text = path.read_text()
    assert '"Cardiology, North"' in text and '"?"' in text  # quoted, as spreadsheets write
    config = recipe.config(
        data={"path": str(path), "label_column": "Discharge", "positive_label": "Readmitted"}
    )
    with pytest.warns(UserWarning, match="Patient ID"):
        splits = recipe.split(config)
    train = splits.train
    features = train.features
    assert list(features.columns) == ["Age", "Creatinine (mg/dL)", "Ward"]  # the ID dropped
    assert features["Age"].dtype == float and features["Age"].isna().any()  # `?` is missing
    assert set(features["Ward"].dropna()) == {
        "Cardiology, North",
        "General Medicine",
        "Oncology",
        "ICU",
    }
    assert "Creatinine (mg/dL): missing" in " ".join(train.texts)
    labels = list(train.labels) + list(splits.evaluation.labels)
    assert 0.01 < labels.count("Readmitted") / len(labels) < 0.04
    # The stratified hold-out keeps the rare positives on both sides.
    assert "Readmitted" in splits.evaluation.labels and "Readmitted" in train.labels


def test_what_it_cannot_read_is_one_line(tmp_path):
    path = messy_table(tmp_path / "export.csv", n=300)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[7, "Age"] = "sixty"  # a word in a numeric column
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    args = ["medical-risk", "train", "--data", str(bad), "--label-column", "Discharge"]
    result = runner.invoke(app, [*args, "--positive-label", "Readmitted"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.strip()]
    assert "bad.csv" in line and "'Age'" in line and "sixty" in line
    # A positive label that is not in the file, and a missing label column, name what to do.
    from finetune.run import split

    typo = {"path": str(path), "label_column": "Discharge", "positive_label": "Readmited"}
    with pytest.raises(UserError, match="'Readmited' is not a label of the training data"):
        split(recipe, recipe.config(data=typo))
    with pytest.raises(UserError, match="Discharge"):
        recipe.split(recipe.config(data={"path": str(path), "label_column": "outcome"}))
