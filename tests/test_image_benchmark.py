"""benchmarks/flowers12.py keeps working (here on two classes of sample-photo crops)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_images import photo_crops


def test_flowers12_script_runs_on_a_stand_in_folder(tmp_path):
    photo_crops(tmp_path / "flowers" / "train", 10, seed=1)
    output = tmp_path / "result.json"
    script = Path(__file__).parent.parent / "benchmarks" / "flowers12.py"
    smoke = "smoke:image.size=32,train.max_steps=1,train.select_folds=2,data.positive_label=flower"
    subprocess.run(
        [sys.executable, str(script), "--data", str(tmp_path / "flowers"), "--variant", smoke]
        + ["--output", str(output)],
        check=True,
        capture_output=True,
    )
    (row,) = json.loads(output.read_text())["rows"]
    assert row["variant"] == "smoke" and row["split"] == "validation"
    # Validation split: the training photos alone, a fifth of them evaluated.
    assert row["n_eval"] == 4 and row["n_train"] == 16
    assert row["selection"].startswith("2-fold") and 0 <= row["other_tta_flip_accuracy"] <= 1
