"""Image classification on real photos: Flowers-12 (12 species, 60 training + 20 test photos each).

    # Regularisation levers, one at a time, on VALIDATION photos (a fixed, stratified 20% of
    # the training photos; the test photos are not read):
    python benchmarks/flowers12.py --split validation --variant base \\
        --variant views4:image.cache_views=4 --variant ls:train.label_smoothing=0.1
    # The targets, once the defaults are chosen: train on train/, report test/ (3 seeds):
    python benchmarks/flowers12.py --split test --seeds 1 2 3
    python benchmarks/flowers12.py --data path/to/flowers12 ...   # another copy of the data

The data is read where it lies (default ../shared/data/flowers12 beside the repository); its
licence is unknown, so it is never copied into the repository. Each variant is a name and
`--set`-style options over the recipe's photo defaults; each run prints one JSON line
(fine-tuned and linear-probe accuracy and macro-F1, kept epoch, how it was chosen, time) and
the whole table goes to --output.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "flowers12"


def variant(text: str) -> tuple[str, dict]:
    """'name:key=value,key=value' -> (name, nested options)."""
    from finetune.config import parse_set_options

    name, _, options = text.partition(":")
    return name, parse_set_options([item for item in options.split(",") if item])


def run_once(data: Path, split: str, options: dict, seed: int, scratch: Path) -> dict:
    from finetune.config import deep_update
    from recipes.image_classification import recipe

    # validation: the training photos alone; the recipe holds out a fixed (data.split_seed),
    # stratified 20% of them as its evaluation rows. test: train/ trains, test/ evaluates.
    path = data / "train" if split == "validation" else data
    settings = deep_update(
        {"data": {"path": str(path)}, "train": {"seed": seed}, "output": str(scratch / "run")},
        options,
    )
    config = recipe.config(**settings, overwrite=True)
    started = time.perf_counter()
    run = recipe.train(config, show_progress=False)
    metrics = run.metrics
    probe = metrics["baselines"]["embedding_logreg"]
    wall = round(time.perf_counter() - started, 1)
    return {
        "seed": seed,
        "accuracy": round(metrics["accuracy"], 4),
        "f1": round(metrics["f1"], 4),
        "probe_accuracy": round(probe["accuracy"], 4),
        "probe_f1": round(probe["f1"], 4),
        "kept_epoch": metrics["best_epoch"],
        "selection": metrics.get("selection", {}).get("method", "validation rows"),
        "n_train": metrics["n_train"],
        "n_eval": metrics["n_eval"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": wall,
        # The same trained model with the other image.tta_flip setting (training is the same).
        "other_tta_flip_accuracy": round(other_tta_accuracy(run), 4),
    }


def other_tta_accuracy(run) -> float:
    """Evaluation accuracy of the run's model with flip averaging switched the other way."""
    import pandas as pd

    predictions = pd.read_csv(run.folder / "predictions.csv")
    run.model.tta_flip = not run.model.tta_flip
    try:
        predicted = run.predict_proba(predictions["path"].tolist()).argmax(axis=1)
    finally:
        run.model.tta_flip = not run.model.tta_flip
    labels = [run.labels[i] for i in predicted]
    return float((predictions["label"].astype(str) == pd.Series(labels)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Flowers-12 folder.")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--variant", action="append", default=None, help="name:key=value,...")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/flowers12.json"))
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "train").is_dir():
        sys.exit(f"{data} has no train/ folder: pass --data with the Flowers-12 folder.")
    output = Path(args.output)
    rows = json.loads(output.read_text())["rows"] if output.is_file() else []
    for name, options in map(variant, args.variant or ["base"]):
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as scratch:
                row = {"variant": name, "split": args.split, "options": options}
                row.update(run_once(data, args.split, options, seed, Path(scratch)))
            print(json.dumps(row), flush=True)
            rows.append(row)
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps({"dataset": "flowers12", "rows": rows}, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    from finetune import runtime

    runtime.configure()  # the command's CPU settings, inherited by worker processes
    main()
