"""An export of a run that serves its frozen probe, checked on real weights.

    python benchmarks/export_probe.py OUT_FOLDER

Trains the default intents run (`finetune customer-service train`, bundled MiniLM), replaces
what it serves with a frozen probe fitted on its training file as `embedding_logreg` is
fitted (no real run was at hand that chose the probe on its validation rows), exports it with
`finetune export`, and compares the export's own predict.py with the run's served
probabilities on every test text. Prints the export's checks, the largest probability
difference, the share of equal labels and the export's seconds (docs/usage.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from finetune.evaluation.baselines import VectorPredictor, fit_probe
from finetune.evaluation.selection import Served, save_served
from recipes.customer_service import recipe

DATA = Path(__file__).resolve().parents[1] / "recipes" / "data" / "customer_service"


def serve_a_probe(folder: Path, seed: int) -> None:
    """Replace what the run in `folder` serves with a probe fitted on its training file."""
    run = recipe.load(folder)
    train = pd.read_csv(DATA / "train.csv")
    y = np.array([run.labels.index(label) for label in train.label])
    vectors = run._frozen_vectors(train.text.tolist(), None)
    probe = fit_probe(vectors, y, len(run.labels), seed)
    shutil.rmtree(folder / "delivered")
    save_served(folder, Served("embedding_logreg", VectorPredictor(probe)), {})
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    metrics["delivered"]["name"] = "embedding_logreg"
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")


def exported_predictor(folder: Path):
    """The export's own predict.py, loaded as a user without finetune-kit would."""
    spec = importlib.util.spec_from_file_location("exported_predict", folder / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(folder)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    finetune = [sys.executable, "-m", "finetune.cli"]
    run, exported = args.output / "run", args.output / "exported"
    subprocess.run([*finetune, "customer-service", "train", "--output", str(run)], check=True)
    serve_a_probe(run, args.seed)
    started = time.perf_counter()
    subprocess.run([*finetune, "export", "--run", str(run), "--output", str(exported)], check=True)
    seconds = time.perf_counter() - started
    test = pd.read_csv(DATA / "test.csv").text.tolist()
    ours = exported_predictor(exported)(test)
    served = recipe.load(run).predict_proba(test)
    result = {
        "export_checks": json.loads((exported / "export.json").read_text(encoding="utf-8")),
        "test_texts": len(test),
        "max_abs_diff": float(np.abs(ours - served).max()),
        "label_agreement": float((ours.argmax(1) == served.argmax(1)).mean()),
        "export_seconds": round(seconds, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
