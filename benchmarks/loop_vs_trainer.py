"""The engine's training loop vs `transformers.Trainer` doing the same work, on Banking77.

    python benchmarks/loop_vs_trainer.py                  # Banking77, bundled MiniLM, 1 epoch
    python benchmarks/loop_vs_trainer.py --rows 300       # a seeded slice (smoke test)
    python benchmarks/loop_vs_trainer.py --set train.max_batch_tokens=null   # one lever

The same work on both sides: one model object built by the engine from the customer-service
recipe's settings (the bundled MiniLM, the same LoRA rank, alpha and target modules, the same
mean-pooled linear head from the same seed), the same token ids (the engine's tokenization,
max_length included), the same AdamW with the LoRA and head learning rates, the same linear
warmup schedule, weight decay, gradient clipping and batch size, length-grouped batches (pools
of 50 batches on both sides), dynamic padding to a multiple of 8 tokens, bf16 autocast where
the engine uses it (`models.use_bf16`), one epoch, the same seed, no validation during
training. The head starts random on both sides (the recipe's probe start is an engine
feature, not loop work). The engine side runs the recipe's train options as they ship
(token-budget pieces included: the same gradients, in bounded memory).

Each side runs in its own process, so its peak RSS is its own; both are scored on the test
file by the same inference code (accuracy and macro-F1). The ratios are loop / Trainer:
speed above 1 means the loop is faster, memory below 1 means it is lighter.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from customer_service_banking77 import load_frames

from finetune.runtime import peak_memory_mb

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"
# The bar for keeping the custom loop: this much faster, or this much lighter.
SPEED_BAR, MEMORY_BAR = 1.2, 0.8


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """The model, its inputs and the encoded rows, built the engine's way from the seed."""
    import numpy as np
    from transformers import set_seed

    from finetune.config import deep_update, parse_set_options
    from finetune.modeling import models
    from finetune.modeling.classifiers import build_for_training
    from recipes.customer_service import recipe

    overrides = {
        "model": {"name": args.model, "head_init": "random"},
        "train": {"seed": args.seed, "epochs": args.epochs, "checkpoint_steps": 0},
    }
    config = recipe.config(**deep_update(overrides, parse_set_options(args.set))).validate()
    train, test = load_frames(args.data_dir, args.label_column, args.rows)
    labels = sorted(train[args.label_column].unique())
    index = {label: i for i, label in enumerate(labels)}
    device = models.pick_device()
    bf16 = models.use_bf16(config.train.precision, device)
    set_seed(config.train.seed)
    model, inputs, _ = build_for_training("text", config, len(labels), bf16, device)
    return {
        "config": config,
        "device": device,
        "bf16": bf16,
        "model": model,
        "inputs": inputs,
        "train_ids": [list(ids) for ids in inputs.encode(train["text"].tolist())],
        "train_labels": np.array([index[x] for x in train[args.label_column]]),
        "test_ids": [list(ids) for ids in inputs.encode(test["text"].tolist())],
        "test_labels": np.array([index[x] for x in test[args.label_column]]),
    }


def scored(work: dict[str, Any], seconds: float, samples: int, rss_before: float) -> dict:
    """Test-file figures by the engine's inference code, and the speed and memory figures."""
    import torch
    from sklearn.metrics import f1_score

    from finetune.modeling.inference import predict_proba

    peak = peak_memory_mb()  # training's peak, before scoring adds its own
    model, config = work["model"], work["config"]
    model.eval()
    proba = predict_proba(
        model,
        work["test_ids"],
        work["inputs"],
        config.train.eval_batch_size,
        work["device"],
        work["bf16"],
    )
    predicted, truth = proba.argmax(1), work["test_labels"]
    row = {
        "accuracy": float((predicted == truth).mean()),
        "f1": float(f1_score(truth, predicted, average="macro")),
        "train_seconds": seconds,
        "samples_per_second": samples / seconds,
        "rss_before_training_mb": rss_before,
        "peak_rss_mb": peak,
        "n_train": len(work["train_ids"]),
        "n_test": len(truth),
    }
    if work["device"] == "cuda":
        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def run_loop(args: argparse.Namespace) -> dict:
    from finetune.evaluation.metrics import validation_figures
    from finetune.training.loop import fit

    work = setup(args)
    config = work["config"]
    rss_before = peak_memory_mb()
    start = time.perf_counter()
    result = fit(
        work["model"],
        work["train_ids"],
        work["train_labels"],
        [],
        work["train_labels"][:0],
        config.train,
        work["inputs"],
        work["device"],
        work["bf16"],
        show_progress=False,
        validation_figures=validation_figures,  # no validation rows: never called
    )
    seconds = time.perf_counter() - start
    # The rows the loop stepped over (its own samples/s times its own clock).
    samples = round(result.samples_per_second * result.train_seconds)
    row = scored(work, seconds, samples, rss_before)
    return {"method": "engine loop", "steps": result.steps, **row}


def run_trainer(args: argparse.Namespace) -> dict:
    import tempfile

    import torch
    from datasets import Dataset
    from transformers import (
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        get_linear_schedule_with_warmup,
    )

    from finetune.training.loop import _param_groups, make_optimizer

    work = setup(args)
    model, train = work["model"], work["config"].train
    dataset = Dataset.from_dict(
        {
            "input_ids": work["train_ids"],
            "attention_mask": [[1] * len(ids) for ids in work["train_ids"]],
            "labels": work["train_labels"].tolist(),
        }
    )
    total = math.ceil(math.ceil(len(dataset) / train.batch_size) * train.epochs)
    optimizer = make_optimizer(train.optim, _param_groups(model, train), train.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(train.warmup_ratio * total), total)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)

    def compute_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None):
        return loss_fn(logits.float(), labels)

    rss_before = peak_memory_mb()
    with tempfile.TemporaryDirectory() as tmp:
        arguments = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=train.batch_size,
            num_train_epochs=train.epochs,
            max_grad_norm=train.max_grad_norm,
            bf16=work["bf16"],
            # transformers 5's spelling of group_by_length=True (pools of 50 batches, as ours).
            train_sampling_strategy="group_by_length",
            remove_unused_columns=False,
            label_names=["labels"],
            seed=train.seed,
            use_cpu=work["device"] == "cpu",
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=dataset,
            data_collator=DataCollatorWithPadding(work["inputs"].tokenizer, pad_to_multiple_of=8),
            optimizers=(optimizer, schedule),
            compute_loss_func=compute_loss,
        )
        start = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - start
    row = scored(work, seconds, round(len(dataset) * train.epochs), rss_before)
    return {"method": "transformers.Trainer", "steps": output.global_step, **row}


def child(part: str, args: argparse.Namespace) -> dict:
    """One side in a fresh process, so its peak RSS is its own."""
    command = [sys.executable, __file__, "--part", part, "--data-dir", str(args.data_dir)]
    command += ["--label-column", args.label_column, "--model", args.model]
    command += ["--seed", str(args.seed), "--epochs", str(args.epochs), "--rows", str(args.rows)]
    command += [item for option in args.set for item in ("--set", option)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{part} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(loop: dict, trainer: dict) -> dict:
    """The ratios loop / Trainer and what they decide (the issue's bar)."""
    speed = loop["samples_per_second"] / trainer["samples_per_second"]
    memory = loop["peak_rss_mb"] / trainer["peak_rss_mb"]
    keep = speed >= SPEED_BAR or memory <= MEMORY_BAR
    return {
        "speed_ratio": speed,
        "rss_ratio": memory,
        "keeps_the_loop": keep,
        "bar": f"loop at least {SPEED_BAR}x faster or {1 - MEMORY_BAR:.0%} lighter in peak RSS",
    }


def table(rows: list[dict]) -> str:
    header = ["method", "samples_per_second", "train_seconds", "peak_rss_mb", "accuracy", "f1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row[h]:.3f}" if isinstance(row[h], float) else str(row[h]) for h in header]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--label-column", default="category")
    parser.add_argument("--model", default="minilm", help="model name or folder (tests: tiny)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--rows", type=int, default=0, help="a seeded slice of N rows (0: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks" / "results" / "loop_vs_trainer.json")
    )
    parser.add_argument("--part", choices=["loop", "trainer"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(run_loop(args) if args.part == "loop" else run_trainer(args)))
        return
    loop, trainer = child("loop", args), child("trainer", args)
    result = {
        "date": str(date.today()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "data_dir": str(args.data_dir),
        "rows": args.rows or "all",
        "model": args.model,
        "epochs": args.epochs,
        "seed": args.seed,
        "set": args.set,
        "runs": [loop, trainer],
        "table": table([loop, trainer]),
        **compare(loop, trainer),
    }
    print(result["table"])
    print(
        f"loop / Trainer: {result['speed_ratio']:.2f}x samples/s, "
        f"{result['rss_ratio']:.2f}x peak RSS ({result['bar']}: "
        f"{'met' if result['keeps_the_loop'] else 'not met'})"
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"written to {output}")


if __name__ == "__main__":
    from finetune import runtime

    runtime.configure()  # the command's CPU settings, inherited by worker processes
    main()
