"""Customer service on Banking77: the recipe default vs a plain Trainer fine-tune, in one run.

    python benchmarks/customer_service_banking77.py                      # seed 42
    python benchmarks/customer_service_banking77.py --seeds 1 2 3 --reference-epochs 1
    python benchmarks/customer_service_banking77.py --limit 300 --max-steps 5   # smoke test
    python benchmarks/customer_service_banking77.py --set model.lora_layers=3  # one lever
    python benchmarks/customer_service_banking77.py --skip-reference --preset accurate  # mpnet

Each contender runs in its own process so its peak RSS is its own. The reference is what a
user gets from the transformers docs: AutoModelForSequenceClassification on the same bundled
MiniLM, full fine-tuning, every text padded to 64 tokens, fp32, batch 32, Trainer defaults
(lr 5e-5). Speed ratios are taken against it within the same invocation, since the machine is
shared and absolute figures drift. Any folder with train.csv / test.csv (columns text and
category, or --label-column) works in place of Banking77.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from finetune.runtime import peak_memory_mb

ROOT = Path(__file__).resolve().parent.parent


def load_frames(data_dir: str | Path, label_column: str, limit: int | None):
    """Train and test tables; with `limit`, a seeded sample whose test labels occur in train."""
    import pandas as pd

    train = pd.read_csv(Path(data_dir) / "train.csv")
    test = pd.read_csv(Path(data_dir) / "test.csv")
    if limit:
        train = train.sample(n=min(limit, len(train)), random_state=0)
        test = test[test[label_column].isin(set(train[label_column]))].head(limit)
    return train, test


def run_reference(args: argparse.Namespace) -> dict:
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from finetune.evaluation.metrics import classification_metrics
    from finetune.modeling.models import resolve_model_path

    set_seed(args.seed)
    train, test = load_frames(args.data_dir, args.label_column, args.limit)
    labels = sorted(train[args.label_column].unique())
    index = {label: i for i, label in enumerate(labels)}
    path = resolve_model_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))

    class Encoded:
        def __init__(self, frame):
            self.enc = tokenizer(
                frame["text"].tolist(), padding="max_length", truncation=True, max_length=64
            )
            self.labels = [index[label] for label in frame[args.label_column]]

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            item = {k: v[i] for k, v in self.enc.items()}
            item["labels"] = self.labels[i]
            return item

    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=32,
            per_device_eval_batch_size=64,
            num_train_epochs=args.reference_epochs,
            max_steps=args.max_steps or -1,
            learning_rate=5e-5,
            save_strategy="no",
            report_to=[],
            seed=args.seed,
            use_cpu=True,
            disable_tqdm=True,
            logging_strategy="no",
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=Encoded(train))
        start = time.perf_counter()
        output = trainer.train()
        train_seconds = time.perf_counter() - start
        logits = trainer.predict(Encoded(test)).predictions
    proba = np.exp(logits - logits.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    metrics = classification_metrics([index[x] for x in test[args.label_column]], proba, labels)
    return {
        "method": f"plain Trainer full FT ({args.reference_epochs:g} ep, pad 64, fp32)",
        "accuracy": metrics["accuracy"],
        "f1": metrics["f1"],
        "auc": metrics["auc"],
        "train_seconds": train_seconds,
        "samples_per_second": output.metrics["train_samples_per_second"],
        "peak_rss_mb": peak_memory_mb(),
    }


def run_recipe(args: argparse.Namespace) -> dict:
    from finetune.config import deep_update, parse_set_options
    from recipes.customer_service import recipe

    overrides = {"train": {"seed": args.seed}}
    if args.max_steps:
        overrides["train"]["max_steps"] = args.max_steps
    overrides = deep_update(overrides, parse_set_options(args.set))
    tmp = Path(tempfile.mkdtemp())
    train, test = load_frames(args.data_dir, args.label_column, args.limit)
    train_file, test_file = tmp / "train.csv", tmp / "test.csv"
    train.to_csv(train_file, index=False)
    test.to_csv(test_file, index=False)
    config = recipe.config(
        data={
            "path": str(train_file),
            "eval_path": str(test_file),
            "label_column": args.label_column,
        },
        output=str(tmp / "run"),
        preset=args.preset,
        **overrides,
    )
    start = time.perf_counter()
    run = recipe.train(config, show_progress=False)
    wall = time.perf_counter() - start
    # The training run's own peak; serving is a separate command (`predict`) that loads the
    # saved folder, so it is timed below but not counted in the run's memory.
    train_peak = peak_memory_mb()
    m, folder = run.metrics, run.folder
    del run
    texts = test["text"].tolist()
    loaded = recipe.load(folder)
    predict_start = time.perf_counter()
    loaded.predict(texts)
    predict_seconds = time.perf_counter() - predict_start
    return {
        "method": " ".join(
            [
                f"recipe --preset {args.preset}" if args.preset else "recipe default (LoRA)",
                *args.set,
            ]
        ),
        "accuracy": m["accuracy"],
        "f1": m["f1"],
        "auc": m["auc"],
        "train_seconds": m["train_seconds"],
        "samples_per_second": m["samples_per_second"],
        "wall_seconds": wall,
        "peak_rss_mb": train_peak,
        "peak_rss_with_predict_mb": peak_memory_mb(),
        "predict_per_second": len(texts) / predict_seconds,
        "best_epoch": m["best_epoch"],
        "delivered": m["delivered"]["name"],
        "baselines": m["baselines"],
        # Not baselines: the fine-tuned model alone and its blends (eval.blend), each beside
        # the frozen probe blended the same way (is a blend's gain fine-tuning's?).
        "compared": {
            "fine-tuned alone": {k: m["finetuned"][k] for k in ("accuracy", "f1", "auc")},
            **m.get("blends", {}),
        },
    }


def child(part: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--part",
        part,
        "--seed",
        str(args.seed),
        "--data-dir",
        args.data_dir,
        "--label-column",
        args.label_column,
        "--reference-epochs",
        str(args.reference_epochs),
        "--limit",
        str(args.limit),
        "--max-steps",
        str(args.max_steps),
        *[item for option in args.set for item in ("--set", option)],
        *(["--preset", args.preset] if args.preset else []),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{part} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "banking77"))
    parser.add_argument("--label-column", default="category")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reference-epochs", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=0, help="use the first N rows (smoke test)")
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe option on top of its defaults, e.g. model.lora_layers=3 (repeatable)",
    )
    parser.add_argument("--preset", help="the recipe's preset, e.g. accurate (the mpnet pack)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "banking77.json"))
    parser.add_argument("--part", choices=["reference", "recipe"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        result = run_reference(args) if args.part == "reference" else run_recipe(args)
        print(json.dumps(result))
        return

    rows = []
    for seed in args.seeds:
        args.seed = seed
        reference = None if args.skip_reference else child("reference", args)
        recipe = child("recipe", args)
        for row in (reference, recipe):
            if row is None:
                continue
            row["seed"] = seed
            if reference:
                row["speed_ratio"] = row["samples_per_second"] / reference["samples_per_second"]
                row["rss_ratio"] = row["peak_rss_mb"] / reference["peak_rss_mb"]
            rows.append(row)
            for name, figures in row.pop("baselines", {}).items():
                rows.append({"method": f"baseline: {name}", "seed": seed, **figures})
            for name, figures in row.pop("compared", {}).items():
                rows.append({"method": name, "seed": seed, **figures})
    header = [
        "method",
        "seed",
        "accuracy",
        "f1",
        "auc",
        "samples_per_second",
        "train_seconds",
        "wall_seconds",
        "peak_rss_mb",
        "speed_ratio",
        "rss_ratio",
        "predict_per_second",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.get(h) for h in header]
        lines.append(
            "| "
            + " | ".join(
                f"{c:.3f}"
                if isinstance(c, float) and c < 10
                else f"{c:.0f}"
                if isinstance(c, float)
                else ""
                if c is None
                else str(c)
                for c in cells
            )
            + " |"
        )
    table = "\n".join(lines)
    print(table)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "date": str(date.today()),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "data_dir": args.data_dir,
                "rows": rows,
                "table": table,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"written to {output}")


if __name__ == "__main__":
    from finetune import runtime

    runtime.configure()  # the command's CPU settings, inherited by worker processes
    main()
