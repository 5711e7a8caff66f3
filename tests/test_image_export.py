"""`finetune export` for image runs: a standalone folder whose predict.py reads image files
and predicts what the run predicts."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pandas as pd
from test_images import photo_crops
from typer.testing import CliRunner

from finetune.cli import app
from recipes.image_classification import recipe


def test_exported_image_folder_predicts_like_the_run(tmp_path):
    photo_crops(tmp_path / "photos" / "train", 10, seed=1)
    photo_crops(tmp_path / "photos" / "test", 5, seed=2)
    config = recipe.config(
        data={"path": str(tmp_path / "photos"), "positive_label": "flower"},
        image={"size": 64},
        train={"max_steps": 2, "batch_size": 8, "precision": "fp32", "learning_rate": 1e-2},
        output=str(tmp_path / "run"),
    )
    run = recipe.train(config, show_progress=False)
    exported = tmp_path / "exported"
    result = CliRunner().invoke(
        app, ["export", "--run", str(run.folder), "--output", str(exported)]
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in exported.iterdir()} >= {"model.pt", "predict.py", "classifier.json"}
    checks = json.loads((exported / "export.json").read_text())
    assert checks["texts"] == 10 and checks["merged_vs_trained_run"]["max_abs_diff"] < 1e-4
    # As a user without finetune-kit: its own predict.py, by path.
    spec = importlib.util.spec_from_file_location("exported_predict", exported / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    labels, predict_proba = module.load(exported)
    paths = pd.read_csv(run.folder / "predictions.csv")["path"].tolist()
    assert labels == run.labels
    # The export is the fine-tuned model, whatever the run delivers (a baseline or a
    # calibration chosen on the inner folds' predictions).
    np.testing.assert_allclose(predict_proba(paths), run.model_proba(paths), atol=1e-4)
    source = (exported / "predict.py").read_text()
    assert "finetune" not in source and "peft" not in source
    printed = subprocess.run(
        [sys.executable, str(exported / "predict.py"), paths[0]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed.split("\t")[0] in labels
