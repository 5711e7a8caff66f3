"""Chinese review sentiment with a multilingual encoder: fine-tuned vs its baselines, one run.

    finetune models fetch embeddinggemma
    python benchmarks/chinese_reviews.py --model embeddinggemma --train-rows 1200 \
        --eval-rows 1000 --output /tmp/zh-gemma -- --set model.lora_layers=2 --epochs 2

Trains the customer-service recipe on a seeded, stratified sample of the bundled
chinese_reviews training split and evaluates on a fixed, stratified sample of its test split
(seed 42, whatever the training seed), so the fine-tuned model, the character TF-IDF
baseline and the frozen-embedding baseline are scored on the same rows. Samples keep the
run within a CPU budget; the full split is `--train-rows 0 --eval-rows 0`. Arguments after
`--` go to `finetune customer-service train`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split


def sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    if not rows or rows >= len(frame):
        return frame
    kept, _ = train_test_split(frame, train_size=rows, stratify=frame["label"], random_state=seed)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embeddinggemma")
    parser.add_argument("--train-rows", type=int, default=1200)
    parser.add_argument("--eval-rows", type=int, default=1000)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("train_args", nargs="*")
    args = parser.parse_args()
    folder = files("recipes") / "data" / "chinese_reviews"
    args.output.mkdir(parents=True, exist_ok=True)
    train_csv, eval_csv = args.output / "train.csv", args.output / "eval.csv"
    sample(pd.read_csv(folder / "train.csv", keep_default_na=False), args.train_rows, 42).to_csv(
        train_csv, index=False
    )
    sample(pd.read_csv(folder / "test.csv", keep_default_na=False), args.eval_rows, 42).to_csv(
        eval_csv, index=False
    )
    command = [
        sys.executable,
        "-c",
        "from finetune.cli import main; main()",
        "customer-service",
        "train",
        "--data",
        str(train_csv),
        "--eval-data",
        str(eval_csv),
        "--model",
        args.model,
        "--output",
        str(args.output / "run"),
        "--overwrite",
        *args.train_args,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    metrics = json.loads((args.output / "run" / "metrics.json").read_text(encoding="utf-8"))
    rows = {"fine-tuned": metrics, **metrics.get("baselines", {})}
    summary = {name: {k: m.get(k) for k in ("accuracy", "f1", "auc")} for name, m in rows.items()}
    summary["wall_s_under_load"] = round(seconds)
    print(json.dumps(summary, indent=2))
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
