"""Side features: a table's raw columns beside the text, through a wide linear part.

The encoder is fitted on the training rows only and saved as plain numbers; a run with side
features trains (LoRA, QLoRA, resume, layer cache), writes its folder, and reloads to predict
exactly what it wrote."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from finetune.cli import app
from finetune.errors import UserError
from finetune.modeling.features import FeatureEncoder, spline_basis, spline_knots_of
from recipes.medical_risk import recipe

MODEL = "fine-tuned (LoRA)"
runner = CliRunner()


@pytest.fixture(scope="module")
def table(mixed_table, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("side")
    train, test = folder / "train.csv", folder / "test.csv"
    mixed_table(120, 7).to_csv(train, index=False)
    mixed_table(40, 8).to_csv(test, index=False)
    return train, test


def _config(tiny_model_dir, table, output, **model):
    return recipe.config(
        data={
            "path": str(table[0]),
            "eval_path": str(table[1]),
            "label_column": "outcome",
            "positive_label": "sick",
        },
        model={"name": str(tiny_model_dir), "lora_r": 4, "side_features": True, **model},
        # The validation rows choose here (the recipe's default is inner folds, tested in
        # test_oof_selection.py): these tests check what those rows may and may not see.
        train={
            "max_steps": 4,
            "batch_size": 16,
            "precision": "fp32",
            "seed": 1,
            "select_folds": "0",
        },
        output=str(output),
    )


@pytest.fixture(scope="module")
def side_run(tiny_model_dir, table, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "side"
    return recipe.train(_config(tiny_model_dir, table, output), show_progress=False)


def test_the_encoder_is_fitted_on_the_training_rows_only(tiny_model_dir, table, tmp_path):
    from finetune.run import _side_features, split

    config = _config(tiny_model_dir, table, tmp_path / "unused")
    data = split(recipe, config)
    encoder = _side_features(config, data)
    glucose = pd.to_numeric(data.train.features["glucose"])
    fit = glucose.iloc[data.fit_rows]
    (numeric,) = encoder.numeric
    assert numeric.name == "glucose" and numeric.flag  # the training rows have gaps
    assert numeric.median == fit.median()
    assert numeric.mean == pytest.approx(fit.fillna(fit.median()).mean())
    pooled = pd.concat([glucose, pd.to_numeric(data.evaluation.features["glucose"])])
    assert numeric.mean != pytest.approx(pooled.fillna(pooled.median()).mean())
    everything = glucose.fillna(glucose.median())
    assert numeric.mean != pytest.approx(everything.mean())  # validation rows left out too
    # The recipe's splines: knots at the training rows' quantiles (3 knots, 5 basis columns).
    assert config.model.spline_knots == 3
    assert numeric.knots == spline_knots_of(fit.fillna(fit.median()).to_numpy(), 3)
    assert numeric.n_splines == 5
    # Categories one-hot (smoker), free text (notes) left to the text part.
    assert [(c.name, c.categories) for c in encoder.categorical] == [("smoker", ["no", "yes"])]
    assert encoder.width == 2 + 5 + 2
    assert encoder.fields == ["glucose"] * 7 + ["smoker"] * 2


def test_the_spline_basis_is_scikit_learns_and_constant_past_the_training_range():
    from sklearn.preprocessing import SplineTransformer

    values = np.random.default_rng(0).gamma(2.0, 10.0, 300)
    unseen = np.r_[values, -50.0, 0.0, 500.0]
    for n_knots in (3, 5):
        knots = spline_knots_of(values, n_knots)
        reference = SplineTransformer(
            n_knots=n_knots, degree=3, knots="quantile", extrapolation="constant"
        ).fit(values[:, None])
        np.testing.assert_allclose(knots, reference.bsplines_[0].t)
        basis = spline_basis(unseen, knots)
        np.testing.assert_allclose(basis, reference.transform(unseen[:, None]), atol=1e-12)
    # Past the outer knots a value gets the boundary's basis: no runaway extrapolation.
    np.testing.assert_allclose(basis[-1], spline_basis(np.array([values.max()]), knots)[0])


def test_the_splines_separate_a_value_many_rows_share():
    """A 0 that stands for "not measured" in 60% of the rows, at middling risk, while measured
    values raise the risk steadily: no line fits both, the spline's knots meet at 0 and the
    regression on the encoding separates those rows (and so ranks better on new rows)."""
    from sklearn.metrics import roc_auc_score

    from finetune.modeling.features import fit_logistic

    rng = np.random.default_rng(0)
    measured = rng.random(4000) < 0.4
    value = np.where(measured, rng.uniform(1, 100, 4000), 0.0)
    risk = np.where(measured, value / 100, 0.5)
    y = (rng.random(4000) < risk).astype(int)
    frame = pd.DataFrame({"insulin": value})
    aucs = {}
    for knots in (0, 3):
        encoder = FeatureEncoder.fit(frame[:2000], spline_knots=knots)
        model = fit_logistic(encoder.transform(frame[:2000]), y[:2000], 0)
        proba = model.predict_proba(encoder.transform(frame[2000:]))[:, 1]
        aucs[knots] = roc_auc_score(y[2000:], proba)
    assert aucs[3] > aucs[0] + 0.05


def test_a_column_with_few_values_stays_linear():
    frame = pd.DataFrame({"grade": [1, 2, 3, 4] * 10, "dose": np.linspace(0, 1, 40)})
    encoder = FeatureEncoder.fit(frame, spline_knots=3)
    grade, dose = encoder.numeric
    assert grade.knots == [] and dose.n_splines == 5
    assert encoder.transform(frame).shape == (40, 1 + 1 + 5)
    linear = FeatureEncoder.fit(frame)  # spline_knots=0: the logistic-regression baseline's
    assert linear.width == 2 and all(c.knots == [] for c in linear.numeric)


def test_one_spline_knot_is_refused():
    with pytest.raises(UserError, match="spline_knots"):
        recipe.config(model={"spline_knots": 1})


def test_a_side_feature_run_reloads_and_predicts_what_it_wrote(side_run, table, tmp_path):
    folder = side_run.folder
    saved = json.loads((folder / "adapter" / "features.json").read_text())
    assert [c["name"] for c in saved["numeric"]] == ["glucose"]
    assert saved["numeric"][0]["knots"]  # the splines' knots travel with the run
    assert json.loads((folder / "adapter" / "classifier.json").read_text())["n_features"] == 9
    assert "wide.weight" in _head_tensors(folder)
    report = (folder / "report.md").read_text()
    assert "wide linear part over 9 side-feature values (numeric columns also as cubic" in report
    again = recipe.load(folder)
    evaluation = recipe.read(table[1], again.config, labelled=True)
    with np.load(folder / "scores.npz") as scores:
        np.testing.assert_allclose(again.model_proba(evaluation), scores[MODEL], atol=1e-6)
    # The command line's predict reads the columns too, and writes the run's probabilities.
    out = tmp_path / "predicted.csv"
    result = runner.invoke(
        app,
        [
            "medical-risk",
            "predict",
            "--run",
            str(folder),
            "--data",
            str(table[1]),
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    written = pd.read_csv(folder / "predictions.csv")
    predicted = pd.read_csv(out)
    assert (predicted["predicted_label"] == written["predicted_label"]).all()
    np.testing.assert_allclose(predicted["probability"], written["probability"], atol=2e-6)
    with pytest.raises(UserError, match="table rows"):
        again.predict_proba(["glucose: 100 mg/dL"])


def test_the_features_change_the_models_output(side_run, table):
    again = recipe.load(side_run.folder)
    evaluation = recipe.read(table[1], again.config, labelled=True)
    with_features = again.model_proba(evaluation)
    assert again.model.wide.weight.abs().sum() > 0  # the wide part trained
    with torch.no_grad():
        again.model.wide.weight.zero_()
    assert np.abs(again.model_proba(evaluation) - with_features).max() > 1e-4


def test_a_missing_feature_column_is_refused_at_prediction(side_run, table, tmp_path):
    frame = pd.read_csv(table[1]).drop(columns=["smoker"])
    path = tmp_path / "no-smoker.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "p.csv"
    result = runner.invoke(
        app,
        [
            "medical-risk",
            "predict",
            "--run",
            str(side_run.folder),
            "--data",
            str(path),
            "--output",
            str(out),
        ],
    )
    assert result.exit_code != 0 and "smoker" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_resume_with_side_features_continues_exactly(tiny_model_dir, table, tmp_path):
    from finetune.training.checkpoint import Checkpoints

    kept: list[Path] = []
    save = Checkpoints.save

    def save_and_keep(self, state):
        save(self, state)
        kept.append(tmp_path / f"state-{len(kept)}.pt")
        shutil.copy(self.path, kept[-1])

    straight = _config(tiny_model_dir, table, tmp_path / "straight")
    straight = replace(straight, train=replace(straight.train, max_steps=6, checkpoint_steps=2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Checkpoints, "save", save_and_keep)
        recipe.train(straight, show_progress=False)
    middle = torch.load(kept[1], weights_only=True)  # after step 4 of 6, mid-epoch
    assert middle["step"] == 4 and middle["batch_in_epoch"] == 4
    assert "wide.weight" in middle["trainable"]  # the wide part is saved and restored too
    resumed = tmp_path / "resumed"
    target = resumed.with_name("resumed.checkpoint") / "state.pt"
    target.parent.mkdir()
    shutil.copy(kept[1], target)
    from finetune.training.loop import TrainingLoop

    steps = []
    step = TrainingLoop.step
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainingLoop, "step", lambda self, *a: steps.append(1) or step(self, *a))
        recipe.train(replace(straight, output=str(resumed), resume=True), show_progress=False)
    assert len(steps) == 2  # it continued from the checkpoint
    a, b = np.load(tmp_path / "straight" / "scores.npz"), np.load(resumed / "scores.npz")
    np.testing.assert_array_equal(a[MODEL], b[MODEL])


def test_the_layer_cache_and_token_pieces_carry_the_features(tiny_model_dir, table, tmp_path):
    config = _config(tiny_model_dir, table, tmp_path / "cached", lora_layers=1)
    config = replace(config, train=replace(config.train, max_batch_tokens=64))
    import finetune.modeling.layercache as layercache

    seen = []
    original = layercache.cache_inputs

    def spy(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layercache, "cache_inputs", spy)
        run = recipe.train(config, show_progress=False)
    # The run's one cache (training, validation, evaluation rows); not None: the split model
    # gave the same logits.
    cached_inputs, (train_items, _, _) = seen[0]
    assert "features" in cached_inputs.collate(train_items[:3])
    evaluation = recipe.read(table[1], run.config, labelled=True)
    with np.load(run.folder / "scores.npz") as scores:
        again = recipe.load(run.folder)
        np.testing.assert_allclose(again.model_proba(evaluation), scores[MODEL], atol=1e-5)


def test_side_features_train_4bit(tiny_model_dir, table, tmp_path):
    run = recipe.train(
        _config(tiny_model_dir, table, tmp_path / "q", quant="4bit"), show_progress=False
    )
    assert "quantization 4bit" in (run.folder / "report.md").read_text()
    evaluation = recipe.read(table[1], run.config, labelled=True)
    again = recipe.load(run.folder)
    with np.load(run.folder / "scores.npz") as scores:
        np.testing.assert_allclose(again.model_proba(evaluation), scores[MODEL], atol=1e-5)


def _head_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter" / "head.safetensors"))
