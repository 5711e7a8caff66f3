"""Per-patient explanations of the medical-risk score: exact for the wide part, occlusion for
the text part, written by `predict` and summarised in the report; and faithful: setting a
patient's top-ranked field to missing moves the score more than setting a random one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from finetune.cli import app
from recipes.medical_explain import contributions, log_odds, wide_contributions
from recipes.medical_risk import recipe

runner = CliRunner()


def _records(n: int, seed: int) -> pd.DataFrame:
    """Five fields of decreasing weight in the outcome, gaps in two, one category."""
    rng = np.random.default_rng(seed)
    glucose, bmi, age, noise = (rng.normal(0, 1, n) for _ in range(4))
    smoker = rng.choice(["yes", "no"], n)
    risk = 2.0 * glucose + 1.0 * bmi + 0.3 * age + 0.8 * (smoker == "yes")
    outcome = np.where(risk + rng.normal(0, 0.7, n) > 0.4, "sick", "well")
    frame = pd.DataFrame(
        {
            "glucose": (120 + 25 * glucose).round(),
            "bmi": (30 + 5 * bmi).round(1),
            "age": (50 + 10 * age).round(),
            "pulse": (70 + 8 * noise).round(),
            "smoker": smoker,
            "outcome": outcome,
        }
    )
    for column in ("glucose", "bmi"):
        frame.loc[rng.choice(n, n // 12, replace=False), column] = np.nan
    return frame


@pytest.fixture(scope="module")
def explained_run(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain")
    train, test = folder / "train.csv", folder / "test.csv"
    _records(200, 1).to_csv(train, index=False)
    _records(80, 2).to_csv(test, index=False)
    config = recipe.config(
        data={
            "path": str(train),
            "eval_path": str(test),
            "label_column": "outcome",
            "positive_label": "sick",
            "val_fraction": 0.0,  # the last step is kept: the text part is not silent
        },
        model={"name": str(tiny_model_dir), "lora_r": 4},
        train={"max_steps": 8, "batch_size": 16, "seed": 5, "select_folds": "0"},
        eval={"target_recall": None},
        output=str(folder / "run"),
    )
    run = recipe.train(config, show_progress=False)
    return run, test


def _examples(run, path: Path):
    again = recipe.load(run.folder)
    return again, recipe.read(path, again.config, labelled=True)


def test_wide_contributions_are_exact_differences_of_the_wide_score(explained_run):
    run, test = explained_run
    again, examples = _examples(run, test)
    with torch.no_grad():
        again.model.head.weight.zero_()  # the wide part (and the intercept) alone
    score = log_odds(again.predict_proba(examples))
    table = wide_contributions(again.model, again.inputs.encoder, examples.features)
    total = table.sum(axis=1).to_numpy()
    # Contributions are measured from the average training patient: differences between two
    # patients' scores are differences of their summed contributions, exactly.
    # (float32 probabilities near 0 or 1 limit the log-odds' digits: rtol)
    np.testing.assert_allclose(score - score[0], total - total[0], rtol=1e-4, atol=1e-4)
    assert table.abs().mean().idxmax() == "glucose"  # the strongest field in the data


def test_top_ranked_field_moves_the_score_more_than_a_random_one(explained_run):
    """Faithfulness, on the trained hybrid model (wide part and text part both non-zero)."""
    run, test = explained_run
    again, examples = _examples(run, test)
    assert again.model.head.weight.abs().sum() > 0
    table = contributions(again.model, again.inputs, again.predict_proba, examples)
    base = log_odds(again.predict_proba(examples))
    rng = np.random.default_rng(0)
    names = list(table.columns)
    top = [names[i] for i in np.abs(table.to_numpy()).argmax(axis=1)]
    random = [names[i] for i in rng.integers(0, len(names), len(table))]
    moved = {}
    for kind, chosen in (("top", top), ("random", random)):
        frame = pd.read_csv(test).drop(columns=["outcome"])
        for row, name in enumerate(chosen):
            frame.loc[row, name] = np.nan  # missing in the record text and the features
        path = test.with_name(f"{kind}.csv")
        frame.to_csv(path, index=False)
        occluded = recipe.read(path, again.config, labelled=False)
        moved[kind] = np.abs(base - log_odds(again.predict_proba(occluded))).mean()
    assert moved["top"] > moved["random"] * 1.5, moved


def test_predict_writes_risk_and_explanation(explained_run, tmp_path):
    run, test = explained_run
    out = tmp_path / "risk.csv"
    args = ["medical-risk", "predict", "--run", str(run.folder), "--data", str(test)]
    result = runner.invoke(app, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out)
    field = r"(glucose|bmi|age|pulse|smoker) [+-]\d+\.\d\d"
    assert all(re.fullmatch(rf"{field}(; {field}){{2}}", e) for e in written["explanation"])
    positive = written["predicted_label"] == "sick"
    np.testing.assert_allclose(
        written["risk"],
        np.where(positive, written["probability"], 1 - written["probability"]),
        atol=2e-6,
    )


def test_the_report_has_importance_and_worked_examples(explained_run):
    run, _ = explained_run
    report = (run.folder / "report.md").read_text()
    assert "![global importance](plots/importance.png)" in report
    assert (run.folder / "plots" / "importance.png").stat().st_size > 1000
    for case in ("highest risk", "borderline", "false negative"):
        assert case in report
    importance = json.loads((run.folder / "metrics.json").read_text())["records"]["explanations"]
    assert set(importance["importance"]) == {"glucose", "bmi", "age", "pulse", "smoker"}


def test_a_silent_text_part_is_not_occluded(explained_run, monkeypatch):
    """Epoch 0 kept (text head zero): explanations are the wide part's alone, and no extra
    forward passes are made."""
    run, test = explained_run
    again, examples = _examples(run, test)
    with torch.no_grad():
        again.model.head.weight.zero_()
    calls = []
    predict = again.predict_proba
    table = contributions(
        again.model, again.inputs, lambda e: calls.append(1) or predict(e), examples
    )
    assert not calls
    wide = wide_contributions(again.model, again.inputs.encoder, examples.features)
    np.testing.assert_allclose(table.to_numpy(), wide.to_numpy())
