"""Image classification on real photos: Flowers-12 (12 species, 60 training + 20 test photos each).

    # Regularisation levers, one at a time, on VALIDATION photos (a fixed, stratified 20% of
    # the training photos; the test photos are not read):
    python benchmarks/flowers12.py --split validation --variant base \\
        --variant views4:image.cache_views=4 --variant ls:train.label_smoothing=0.1
    # The targets, once the defaults are chosen: train on train/, report test/ (3 seeds):
    python benchmarks/flowers12.py --split test --seeds 1 2 3
    python benchmarks/flowers12.py --data path/to/flowers12 ...   # another copy of the data
    python benchmarks/flowers12.py --speed 4   # images/s with and without the block cache
    # Small photo sets: K species drawn at random, M training photos each (all their test
    # photos evaluate), one set per --draws value:
    python benchmarks/flowers12.py --split test --classes 2 --per-class 60 --draws 1 2 3

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
        # What the run serves (the fine-tuned model, a baseline or a blend, eval.blend) and the
        # fine-tuned model's own figures when it serves something else.
        "delivered": metrics["delivered"]["name"],
        "delivered_rule": metrics["delivered"].get("rule"),
        "finetuned_accuracy": round(metrics["finetuned"]["accuracy"], 4),
        "blends": {
            name: round(figures["accuracy"], 4)
            for name, figures in metrics.get("blends", {}).items()
        },
        "kept_epoch": metrics["best_epoch"],
        "selection": metrics.get("selection", {}).get("method", "validation rows"),
        # The inner folds' mean macro-F1 and log-loss per epoch (every training photo held
        # out once): a steadier figure to compare settings on than the validation photos.
        "fold_per_epoch": [
            [row["epoch"], round(row["mean"], 4), round(row["loss_mean"], 4)]
            for row in metrics.get("selection", {}).get("per_epoch", [])
        ],
        "n_train": metrics["n_train"],
        "n_eval": metrics["n_eval"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": wall,
        # The same trained model with the other image.tta_flip setting (training is the same).
        "other_tta_flip_accuracy": round(other_tta_accuracy(run), 4),
    }


def subset(
    data: Path, classes: int, per_class: int, draw: int, scratch: Path
) -> tuple[Path, list[str]]:
    """A folder of links to `classes` species drawn at random (seeded by `draw`), each with
    `per_class` of its training photos drawn the same way and all its test photos; and the
    species drawn."""
    import random

    rng = random.Random(draw)
    species = sorted(rng.sample(sorted(p.name for p in (data / "train").iterdir()), classes))
    root = scratch / f"flowers{classes}x{per_class}-draw{draw}"
    for name in species:
        photos = {
            "train": rng.sample(sorted((data / "train" / name).iterdir()), per_class),
            "test": sorted((data / "test" / name).iterdir()),
        }
        for part, chosen in photos.items():
            (root / part / name).mkdir(parents=True)
            for photo in chosen:
                (root / part / name / photo.name).symlink_to(photo.resolve())
    return root, species


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


def speed(data: Path, batches: int, batch_size: int) -> dict:
    """Training and prediction images/s with and without the cache, interleaved in one
    process (so load from other processes hits both alike): training steps through the whole
    model on fresh augmented pixels vs through the LoRA blocks on cached views; prediction
    through the whole model vs the upper blocks from cached view 0 (what validation reads)."""
    import torch

    from finetune.modeling.layercache import cache_inputs
    from finetune.run import encode, prepare, split
    from recipes.image_classification import recipe

    with tempfile.TemporaryDirectory() as scratch:
        config = recipe.config(
            data={"path": str(data / "train")},
            image={"cache_views": 1},
            output=scratch,
            overwrite=True,
        )
        prepared = prepare(recipe, config)
        encoded = encode(recipe, prepared, split(recipe, prepared.config))
    model, inputs, bf16 = encoded.model, encoded.inputs, encoded.bf16
    items = list(encoded.fit_ids[: batches * batch_size])
    started = time.perf_counter()
    cache, (rows,) = cache_inputs(model, inputs, [items], batch_size, "cpu", bf16)
    cache_seconds = time.perf_counter() - started
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    seconds = {"train_whole": 0.0, "train_cached": 0.0, "predict_whole": 0.0, "predict_cached": 0.0}
    from finetune.modeling.models import autocast

    for index in range(batches):
        part = slice(index * batch_size, (index + 1) * batch_size)
        for name, source, chosen in (("whole", inputs, items[part]), ("cached", cache, rows[part])):
            model.train()
            started = time.perf_counter()
            with autocast("cpu", bf16):
                loss = model(**source.collate(chosen, train=True)).float().logsumexp(1).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seconds[f"train_{name}"] += time.perf_counter() - started
            model.eval()
            started = time.perf_counter()
            with torch.inference_mode(), autocast("cpu", bf16):
                model(**source.collate(chosen))
            seconds[f"predict_{name}"] += time.perf_counter() - started
    images = batches * batch_size
    rates = {name: round(images / value, 2) for name, value in seconds.items()}
    return {
        "images": images,
        "images_per_second": rates,
        "cache_build_images_per_second": round(images / cache_seconds, 2),
        "train_speedup": round(rates["train_cached"] / rates["train_whole"], 2),
        "bf16": bf16,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Flowers-12 folder.")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--variant", action="append", default=None, help="name:key=value,...")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/flowers12.json"))
    parser.add_argument(
        "--speed", type=int, metavar="BATCHES", help="Measure images/s with and without the cache."
    )
    parser.add_argument("--classes", type=int, help="Species in each drawn subset (all: none).")
    parser.add_argument("--per-class", type=int, default=60, help="Training photos per species.")
    parser.add_argument("--draws", type=int, nargs="+", default=[1], help="One subset each.")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "train").is_dir():
        sys.exit(f"{data} has no train/ folder: pass --data with the Flowers-12 folder.")
    if args.speed:
        print(json.dumps(speed(data, args.speed, 32), indent=2))
        return
    output = Path(args.output)
    rows = json.loads(output.read_text(encoding="utf-8"))["rows"] if output.is_file() else []
    draws = args.draws if args.classes else [None]
    for name, options in map(variant, args.variant or ["base"]):
        for seed, draw in [(seed, draw) for seed in args.seeds for draw in draws]:
            with tempfile.TemporaryDirectory() as scratch:
                row = {"variant": name, "split": args.split, "options": options}
                source, run_options = data, options
                if draw is not None:
                    source, species = subset(
                        data, args.classes, args.per_class, draw, Path(scratch)
                    )
                    row.update(subset=source.name, species=species)
                    if len(species) == 2:  # accuracy does not depend on which is positive
                        run_options = {**options, "data": {"positive_label": species[1]}}
                row.update(run_once(source, args.split, run_options, seed, Path(scratch)))
            print(json.dumps(row), flush=True)
            rows.append(row)
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(
                json.dumps({"dataset": "flowers12", "rows": rows}, indent=2), encoding="utf-8"
            )
    print(f"wrote {output}")


if __name__ == "__main__":
    from finetune import runtime

    runtime.configure()  # the command's CPU settings, inherited by worker processes
    main()
