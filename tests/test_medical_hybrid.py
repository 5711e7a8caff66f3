"""The hybrid model of medical-risk: a wide linear part over the raw columns that starts as the
raw-column logistic regression (one shared preprocessing), beside a text part that starts
silent, so the first candidate epoch is the baseline itself."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from recipes.medical_risk import recipe


@pytest.fixture(scope="module")
def numbers_table(mixed_table, tmp_path_factory) -> tuple[Path, Path]:
    """Numbers with gaps and a category (no free text: the baseline is then all linear)."""
    folder = tmp_path_factory.mktemp("hybrid")
    train, test = folder / "train.csv", folder / "test.csv"
    mixed_table(160, 11).drop(columns=["notes"]).to_csv(train, index=False)
    mixed_table(60, 12).drop(columns=["notes"]).to_csv(test, index=False)
    return train, test


def _config(tiny_model_dir, table, output, **model):
    return recipe.config(
        data={
            "path": str(table[0]),
            "eval_path": str(table[1]),
            "label_column": "outcome",
            "positive_label": "sick",
        },
        model={"name": str(tiny_model_dir), "lora_r": 4, **model},
        # The validation-row path (inner folds: tests/test_oof_selection.py).
        train={"max_steps": 6, "batch_size": 16, "seed": 3, "select_folds": "0"},
        output=str(output),
    )


def test_the_recipe_defaults_to_the_hybrid_model():
    config = recipe.config()
    assert config.model.side_features and config.model.head_init == "wide"
    assert not config.model.wide_frozen
    # Inner folds of small tables choose the epoch and the delivered model; the top 2 layers
    # take LoRA (the frozen ones run once), which pays for the folds.
    assert config.train.select_folds == "auto:3" and config.model.lora_layers == 2


def test_epoch_0_is_the_logistic_regression_baseline(tiny_model_dir, numbers_table, tmp_path):
    """Before any training step, the model's probabilities are the baseline's on the same
    rows (validation and evaluation), even under bf16 autocast where the CPU has it. With
    linear numbers only (spline_knots=0) that is the logistic_regression baseline itself."""
    from finetune import run as engine

    config = _config(tiny_model_dir, numbers_table, tmp_path / "unused", spline_knots=0)
    prepared, data, encoded = _epoch_0(engine, config)
    baselines = engine.fit_baselines(recipe, prepared, data, encoded)
    # One preprocessing: the baseline's fitted encoder is the one the wide part reads.
    encoder, _ = baselines.inputs.fitted["logistic_regression"]
    assert asdict(encoder) == asdict(encoded.inputs.encoder)
    model_eval = engine._predict(prepared, encoded, encoded.eval_ids)
    model_val = engine._predict(prepared, encoded, encoded.val_ids)
    np.testing.assert_allclose(model_eval, baselines.scores["logistic_regression"], atol=1e-5)
    np.testing.assert_allclose(model_val, baselines.val_scores["logistic_regression"], atol=1e-5)


def test_with_splines_epoch_0_is_the_regression_on_the_spline_encoding(
    tiny_model_dir, numbers_table, tmp_path
):
    """The recipe's default wide part: the same regression, fitted on the numbers' splines
    too, so epoch 0 can bend where the linear baseline cannot."""
    from finetune import run as engine
    from finetune.modeling.features import fit_logistic

    config = _config(tiny_model_dir, numbers_table, tmp_path / "unused")
    assert config.model.spline_knots == 3
    prepared, data, encoded = _epoch_0(engine, config)
    encoder = encoded.inputs.encoder
    assert any(c.n_splines for c in encoder.numeric)
    train = data.train.features.iloc[data.fit_rows]
    regression = fit_logistic(encoder.transform(train), data.y_fit, config.train.seed)
    expected = regression.predict_proba(encoder.transform(data.evaluation.features))
    model_eval = engine._predict(prepared, encoded, encoded.eval_ids)
    np.testing.assert_allclose(model_eval, expected, atol=1e-5)


def _epoch_0(engine, config):
    """The run's prepared model at epoch 0: the wide part fitted, the text part silent."""
    prepared = engine.prepare(recipe, config)
    data = engine.split(recipe, prepared.config)
    encoded = engine.encode(recipe, prepared, data)
    engine._start_from_wide(prepared, data, encoded)
    assert torch.count_nonzero(encoded.model.head.weight) == 0  # the text part is silent
    return prepared, data, encoded


def test_a_hybrid_run_keeps_or_improves_epoch_0_on_validation(
    tiny_model_dir, numbers_table, tmp_path
):
    run = recipe.train(_config(tiny_model_dir, numbers_table, tmp_path / "run"), False)
    records = json.loads((run.folder / "history.json").read_text())["epochs"]
    assert records[0]["epoch"] == 0  # the baseline, scored on the validation rows
    kept = next(r for r in records if r["epoch"] == run.metrics["best_epoch"])
    assert kept["val_auc"] >= records[0]["val_auc"]


def test_the_frozen_wide_part_keeps_the_regressions_weights(
    tiny_model_dir, numbers_table, tmp_path
):
    from finetune import run as engine

    config = _config(tiny_model_dir, numbers_table, tmp_path / "frozen", wide_frozen=True)
    # No validation rows: the last step is kept, so the text part's change shows.
    config = replace(
        config,
        data=replace(config.data, val_fraction=0.0),
        eval=replace(config.eval, target_recall=None),
    )
    prepared = engine.prepare(recipe, config)
    data = engine.split(recipe, prepared.config)
    encoded = engine.encode(recipe, prepared, data)
    engine._start_from_wide(prepared, data, encoded)
    start = encoded.model.wide.weight.detach().clone()
    run = recipe.train(replace(config, output=str(tmp_path / "trained")), False)
    assert torch.equal(run.model.wide.weight.detach().cpu(), start)
    assert torch.count_nonzero(run.model.head.weight) > 0  # the text part learned


def test_head_init_wide_needs_side_features():
    from finetune.errors import UserError

    with pytest.raises(UserError, match="side_features"):
        recipe.config(model={"side_features": False})
