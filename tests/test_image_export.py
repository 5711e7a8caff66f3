"""`finetune export` for image runs: a standalone folder whose predict.py reads image files
and predicts what the run predicts."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_images import photo_crops
from typer.testing import CliRunner

from finetune.cli import app
from recipes.image_classification import recipe


def tiny_image_run(tmp_path):
    """A two-step run on crops of two photos, 64 px."""
    photo_crops(tmp_path / "photos" / "train", 10, seed=1)
    photo_crops(tmp_path / "photos" / "test", 5, seed=2)
    config = recipe.config(
        data={"path": str(tmp_path / "photos"), "positive_label": "flower"},
        image={"size": 64},
        train={"max_steps": 2, "batch_size": 8, "precision": "fp32", "learning_rate": 1e-2},
        output=str(tmp_path / "run"),
    )
    return recipe.train(config, show_progress=False)


def test_exported_image_folder_predicts_like_the_run(tmp_path):
    run = tiny_image_run(tmp_path)
    exported = tmp_path / "exported"
    result = CliRunner().invoke(
        app, ["export", "--run", str(run.folder), "--output", str(exported)]
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in exported.iterdir()} >= {"model.pt", "predict.py", "classifier.json"}
    checks = json.loads((exported / "export.json").read_text())
    agreement = checks.get("merged_vs_trained_run") or checks["served_vs_run"]
    assert checks["texts"] == 10 and agreement["max_abs_diff"] < 1e-4
    # As a user without finetune-kit: its own predict.py, by path.
    spec = importlib.util.spec_from_file_location("exported_predict", exported / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    labels, predict_proba = module.load(exported)
    paths = pd.read_csv(run.folder / "predictions.csv")["path"].tolist()
    assert labels == run.labels
    # The export is the fine-tuned model unless the run serves its frozen probe uncalibrated
    # (the pixel baseline and a calibration are not exported; the command says so).
    expected = run.predict_proba(paths) if "serves" in checks else run.model_proba(paths)
    np.testing.assert_allclose(predict_proba(paths), expected, atol=1e-4)
    source = (exported / "predict.py").read_text()
    assert "finetune" not in source and "peft" not in source
    printed = subprocess.run(
        [sys.executable, str(exported / "predict.py"), paths[0]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed.split("\t")[0] in labels


@pytest.mark.parametrize(
    ("serves", "calibration"), [("probe", "none"), ("probe", "isotonic"), ("model", "platt")]
)
def test_an_image_export_serves_the_runs_probe_and_calibration(serves, calibration, tmp_path):
    """The frozen probe reads the backbone's features before fine-tuning: the export holds the
    backbone without the adapter and the probe as its head. A calibration travels as numbers
    in classifier.json. Either way predict.py serves what the run serves."""
    import shutil

    from finetune.evaluation.baselines import VectorPredictor, fit_probe
    from finetune.evaluation.calibration import fit_calibrator
    from finetune.evaluation.selection import Served, save_served

    run = tiny_image_run(tmp_path)
    train = [str(p) for p in sorted((tmp_path / "photos" / "train").rglob("*")) if p.is_file()]
    y = np.array([run.labels.index(Path(path).parent.name) for path in train])
    predictor, name = None, "model"
    if serves == "probe":
        probe = fit_probe(run._frozen_vectors(train, None), y, 2, seed=0)
        # The run's model may be its own probe start (epoch 0): a softer probe differs.
        probe.weight, probe.bias = probe.weight / 4, probe.bias / 4
        predictor, name = VectorPredictor(probe), "embedding_logreg"
    raw = (
        run.model_proba(train)
        if predictor is None
        else probe.predict_proba(run._frozen_vectors(train, None))
    )
    # Fitted on squeezed scores, so that the map is far from the identity.
    calibrator = fit_calibrator(calibration, raw[:, 1] * 0.5 + 0.2, y)
    shutil.rmtree(run.folder / "delivered")
    save_served(run.folder, Served(name, predictor, calibrator), {})
    paths = pd.read_csv(run.folder / "predictions.csv")["path"].tolist()
    served = recipe.load(run.folder).predict_proba(paths)
    assert np.abs(served - run.model_proba(paths)).max() > 1e-3  # the two are told apart
    exported = tmp_path / "exported"
    result = CliRunner().invoke(
        app, ["export", "--run", str(run.folder), "--output", str(exported)]
    )
    assert result.exit_code == 0, result.output
    assert f"predict.py serves {name}, as the run does" in result.output
    assert "Note:" not in result.output
    checks = json.loads((exported / "export.json").read_text())
    assert checks["served_vs_run"]["max_abs_diff"] < 1e-4
    assert ("merged_vs_trained_run" in checks) == (serves == "model")
    info = json.loads((exported / "classifier.json").read_text())
    assert (info["calibration"] or {"method": "none"})["method"] == calibration
    spec = importlib.util.spec_from_file_location("exported_probe", exported / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    np.testing.assert_allclose(module.load(exported)[1](paths), served, atol=1e-4)
