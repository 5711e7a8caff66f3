"""What quantization saves: none / 8bit / 4bit for an encoder and a decoder backbone, in one run.

    python benchmarks/quantization.py          # CPU default: 34 min on 2 cores under heavy load
    python benchmarks/quantization.py --limit 0 --epochs 3 --require-cuda   # what gpu_check.sh runs
    python benchmarks/quantization.py --limit 30 --max-steps 2      # smoke test
    python benchmarks/quantization.py --task reply --models qwen2.5-0.5b --quants none 4bit

`--task reply` fine-tunes a chat model to write the customer-service replies instead (the
recipe's `--task reply` on bundled Bitext; `--limit` and `--eval-limit` are its training
pairs and test messages, 0 for all) and adds training tokens/s (prompt and reply tokens) and
generation tokens/s (new tokens) to each row.

Data: the customer-service recipe's bundled shop_intents (a seeded, stratified sample of
`--limit` training rows; the test split, or its first `--eval-limit` rows). Each (model, quant)
pair trains the recipe's default classifier (LoRA, head from the linear probe) in its own
process, so its peak memory is its own: RSS on CPU, `torch.cuda.max_memory_allocated` on CUDA.
`weights_mb` is the backbone's parameters and buffers as stored (packed 4/8-bit included),
the part quantization shrinks whatever the device. Ratios are against the same model unquantized
within this invocation (the machine is shared; absolute speed drifts between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "recipes" / "data" / "customer_service"
HEADER = [
    "model",
    "quant",
    "device",
    "peak_memory_mb",
    "memory_kind",
    "weights_mb",
    "samples_per_second",
    "train_seconds",
    "accuracy",
    "f1",
    "memory_ratio",
    "weights_ratio",
    "speed_ratio",
]
REPLY_HEADER = [
    "model",
    "quant",
    "device",
    "peak_memory_mb",
    "memory_kind",
    "samples_per_second",
    "tokens_per_second",
    "generate_tokens_per_second",
    "train_seconds",
    "rougeL",
    "chrf",
    "memory_ratio",
    "speed_ratio",
]


def sample_data(args: argparse.Namespace, folder: Path) -> tuple[Path, Path]:
    """A seeded, stratified sample of the training rows and the first test rows, as CSVs."""
    import pandas as pd

    train = pd.read_csv(DATA / "train.csv")
    test = pd.read_csv(DATA / "test.csv")
    if args.limit and args.limit < len(train):
        share = args.limit / len(train)
        train = train.groupby("label", group_keys=False).sample(frac=share, random_state=0)
    if args.eval_limit:
        test = test.groupby("label", group_keys=False).head(
            max(1, args.eval_limit // test["label"].nunique())
        )
    paths = folder / "train.csv", folder / "test.csv"
    train.to_csv(paths[0], index=False)
    test.to_csv(paths[1], index=False)
    return paths


def reply_config(args: argparse.Namespace, train: dict, output: Path):
    """The recipe's reply task on its bundled Bitext pairs, sized by --limit / --eval-limit."""
    from recipes.customer_service import recipe

    options = {"task": "reply"}
    for option, given in (("train_rows", args.limit), ("eval_rows", args.eval_limit)):
        if given is not None:  # else the recipe's own; 0: all
            options[option] = given or None
    if args.max_new_tokens:
        options["max_new_tokens"] = args.max_new_tokens
    if args.retrieval_model:
        options["retrieval_model"] = args.retrieval_model
    model = {"name": args.model, "quant": args.quant}
    return recipe.config(options=options, model=model, train=train, output=str(output))


def reply_row(metrics: dict) -> dict:
    """A reply run's figures for the table."""
    train, generation = metrics["train"], metrics["generation"]
    return {
        "samples_per_second": train["samples_per_second"],
        "tokens_per_second": train["tokens_per_second"],
        "generate_tokens_per_second": generation["tokens_per_second"],
        "train_seconds": train["train_seconds"],
        "rougeL": generation["rougeL"],
        "chrf": generation["chrf"],
        "n_eval": metrics["n_eval"],
        "steps": train["steps"],
    }


def peak_memory() -> tuple[str, float, str]:
    """The device's name, this process's peak memory in MB and what kind it is."""
    import torch

    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
        return torch.cuda.get_device_name(), peak, "cuda max allocated"
    return "cpu", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS"


def run_one(args: argparse.Namespace) -> dict:
    """One (model, quant) training run; prints its row as JSON."""
    import torch

    from recipes.customer_service import recipe

    tmp = Path(tempfile.mkdtemp())
    train = {"epochs": args.epochs, "batch_size": args.batch_size, "optim": args.optim}
    train = {key: value for key, value in train.items() if value is not None}
    if args.max_steps:
        train["max_steps"] = args.max_steps
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if args.task == "reply":
        run = recipe.train(reply_config(args, train, tmp / "run"), show_progress=False)
        device, peak, kind = peak_memory()
        base = {"model": args.model, "quant": args.quant, "device": device}
        return {**base, "peak_memory_mb": peak, "memory_kind": kind, **reply_row(run.metrics)}
    train_file, test_file = sample_data(args, tmp)
    config = recipe.config(
        data={"path": str(train_file), "eval_path": str(test_file), "max_length": 64},
        model={"name": args.model, "quant": args.quant},
        train=train,
        output=str(tmp / "run"),
    )
    run = recipe.train(config, show_progress=False)
    backbone = run.model.backbone
    stored = sum(t.numel() * t.element_size() for t in backbone.parameters())
    stored += sum(t.numel() * t.element_size() for t in backbone.buffers())
    device, peak, kind = peak_memory()
    m = run.metrics
    return {
        "model": args.model,
        "quant": args.quant,
        "device": device,
        "peak_memory_mb": peak,
        "memory_kind": kind,
        "weights_mb": stored / 2**20,
        "samples_per_second": m["samples_per_second"],
        "train_seconds": m["train_seconds"],
        "accuracy": m["accuracy"],
        "f1": m["f1"],
        "n_train": m["n_train"],
        "n_eval": m["n_eval"],
        "steps": json.loads((run.folder / "history.json").read_text(encoding="utf-8"))["epochs"][
            -1
        ]["step"],
        "baselines": m["baselines"],
    }


PASSED = (
    *("limit", "eval_limit", "epochs", "max_steps", "batch_size", "optim", "task"),
    *("max_new_tokens", "retrieval_model"),
)
# The intent task's sizes unless given; the reply task takes the recipe's own.
INTENT_DEFAULTS = {"limit": 112, "eval_limit": 56, "epochs": 1.0, "batch_size": 16}


def child(args: argparse.Namespace, model: str, quant: str) -> dict:
    """One pair in its own process (so its peak memory is its own); a failure is a row with
    the error's last lines, and the comparison goes on."""
    command = [sys.executable, __file__, "--part", "--model", model, "--quant", quant]
    for name in PASSED:
        if getattr(args, name) is not None:
            command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    # Packages installed beside the interpreter's own (a --target folder) stay importable.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        print(f"{model} / {quant} failed:\n{done.stderr[-3000:]}", file=sys.stderr, flush=True)
        return {"model": model, "quant": quant, "error": done.stderr.strip()[-600:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def add_ratios(row: dict, reference: dict) -> None:
    """The row's memory, weights and speed against the same model unquantized."""
    for ratio, key in (
        ("memory_ratio", "peak_memory_mb"),
        ("weights_ratio", "weights_mb"),
        ("speed_ratio", "samples_per_second"),
    ):
        if row.get(key) is not None and reference.get(key):
            row[ratio] = row[key] / reference[key]


def format_table(rows: list[dict], header: list[str] = HEADER) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if value < 10 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [cell(row.get(h)) for h in header]
        if "error" in row:  # the run failed: its error in place of the figures
            cells = [*cells[:2], "failed: " + " ".join(row["error"].split())[-200:]]
            cells += [""] * (len(header) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "smollm2-135m"])
    parser.add_argument("--quants", nargs="+", default=["none", "8bit", "4bit"])
    parser.add_argument("--limit", type=int, help="training rows: 112 (0: all 700); reply: 240")
    parser.add_argument("--eval-limit", type=int, help="test rows: 56 (0: all 280); reply: 108")
    parser.add_argument("--epochs", type=float, help="1 (reply: the recipe's)")
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--batch-size", type=int, help="16 (reply: the recipe's)")
    parser.add_argument("--optim", help="adamw (the recipe's)")
    parser.add_argument("--task", choices=("intent", "reply"), default="intent")
    parser.add_argument("--max-new-tokens", type=int, help="reply task (default: the recipe's)")
    parser.add_argument("--retrieval-model", help="reply task: the retrieval encoder (a folder)")
    parser.add_argument("--require-cuda", action="store_true", help="fail unless CUDA is used")
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks" / "results" / "quantization.json")
    )
    parser.add_argument("--table", help="also write the markdown table to this file")
    parser.add_argument("--part", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--quant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name, value in INTENT_DEFAULTS.items():
        if args.task == "intent" and getattr(args, name) is None:
            setattr(args, name, value)
    if args.part:
        print(json.dumps(run_one(args)))
        return
    if args.require_cuda:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--require-cuda: torch sees no CUDA device (is a CUDA build installed?).")

    started = time.perf_counter()
    rows = []
    for model in args.models:
        reference = None
        for quant in args.quants:
            row = child(args, model, quant)
            rows.append(row)
            if "error" in row:
                continue
            print(f"{model} {quant}: {row['samples_per_second']:.1f} samples/s", flush=True)
            reference = reference or (row if quant == "none" else None)
            if reference:
                add_ratios(row, reference)
    table = format_table(rows, REPLY_HEADER if args.task == "reply" else HEADER)
    print(table)
    result = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(["python", "benchmarks/quantization.py", *sys.argv[1:]]),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "table": table,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.table:
        Path(args.table).write_text(table + "\n", encoding="utf-8")
    print(f"written to {output}")


if __name__ == "__main__":
    from finetune import runtime

    runtime.configure()  # the command's CPU settings, inherited by worker processes
    main()
