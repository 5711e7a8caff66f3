"""Heap growth step by step: where a customer-service run's memory goes while it trains.

The figures measured with these commands are in docs/benchmarks.md ("Memory"):

    python benchmarks/step_memory.py --steps 30                      # 2,008 MB
    python benchmarks/step_memory.py --steps 30 --max-batch-tokens 1024   # 1,184 MB
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 python benchmarks/step_memory.py --steps 80 \
        --max-batch-tokens 1024                                      # 1,348 MB (8: 1,061)

Trains the recipe's default classifier (bundled MiniLM, batch 32, bf16 where the CPU has it)
on `--data` (default Banking77 train.csv) for `--steps` steps and prints, before each step,
the batch shape and the process's anonymous memory (RssAnon from /proc/self/status), then the
final figure and the training time. No validation, no baselines: only the training loop.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def anonymous_mb() -> int:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition(":")
        if name == "RssAnon":
            return int(value.split()[0]) // 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ROOT.parent / "shared" / "data" / "banking77" / "train.csv"
    parser.add_argument("--data", type=Path, default=default)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="category")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-batch-tokens", type=int, default=None)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from finetune.evaluation.metrics import validation_figures
    from finetune.modeling import models
    from finetune.modeling.classifiers import build_for_training
    from finetune.training.loop import fit
    from recipes.customer_service import recipe

    config = recipe.config(train={"max_steps": args.steps})
    config.train.max_batch_tokens = args.max_batch_tokens
    frame = pd.read_csv(args.data)
    labels = frame[args.label_column].astype("category").cat.codes.to_numpy()
    bf16 = models.use_bf16(config.train.precision, "cpu")
    model, inputs, _ = build_for_training(
        "text", config, int(labels.max()) + 1, bf16, "cpu", gradient_checkpointing=False
    )
    ids = inputs.encode(frame[args.text_column].astype(str).tolist())
    print(f"before training: {anonymous_mb()} MB anonymous", flush=True)
    collate = inputs.collate

    def traced(items, train=False):
        batch = collate(items, train)
        shape = tuple(batch["input_ids"].shape)
        print(f"batch {shape}: {anonymous_mb()} MB before it", flush=True)
        return batch

    inputs.collate = traced
    start = time.perf_counter()
    fit(
        model,
        ids,
        labels,
        [],
        np.array([]),
        config.train,
        inputs,
        "cpu",
        bf16,
        False,
        validation_figures=validation_figures,
    )
    seconds = time.perf_counter() - start
    print(f"after {args.steps} steps: {anonymous_mb()} MB anonymous, {seconds:.1f} s training")


if __name__ == "__main__":
    from finetune import runtime

    runtime.configure()  # the command's CPU settings, inherited by worker processes
    main()
