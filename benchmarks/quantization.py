"""What quantization saves: none / 8bit / 4bit for an encoder and a decoder backbone, in one run.

    python benchmarks/quantization.py          # CPU default: 34 min on 2 cores under heavy load
    python benchmarks/quantization.py --limit 0 --epochs 3 --require-cuda   # what gpu_check.sh runs
    python benchmarks/quantization.py --limit 30 --max-steps 2      # smoke test

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


def run_one(args: argparse.Namespace) -> dict:
    """One (model, quant) training run; prints its row as JSON."""
    import torch

    from recipes.customer_service import recipe

    tmp = Path(tempfile.mkdtemp())
    train_file, test_file = sample_data(args, tmp)
    train = {"epochs": args.epochs, "batch_size": args.batch_size, "optim": args.optim}
    if args.max_steps:
        train["max_steps"] = args.max_steps
    config = recipe.config(
        data={"path": str(train_file), "eval_path": str(test_file), "max_length": 64},
        model={"name": args.model, "quant": args.quant},
        train=train,
        output=str(tmp / "run"),
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run = recipe.train(config, show_progress=False)
    backbone = run.model.backbone
    stored = sum(t.numel() * t.element_size() for t in backbone.parameters())
    stored += sum(t.numel() * t.element_size() for t in backbone.buffers())
    cuda = torch.cuda.is_available()
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    m = run.metrics
    return {
        "model": args.model,
        "quant": args.quant,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "peak_memory_mb": peak,
        "memory_kind": "cuda max allocated" if cuda else "peak RSS",
        "weights_mb": stored / 2**20,
        "samples_per_second": m["samples_per_second"],
        "train_seconds": m["train_seconds"],
        "accuracy": m["accuracy"],
        "f1": m["f1"],
        "n_train": m["n_train"],
        "n_eval": m["n_eval"],
        "steps": json.loads((run.folder / "history.json").read_text())["epochs"][-1]["step"],
        "baselines": m["baselines"],
    }


def child(args: argparse.Namespace, model: str, quant: str) -> dict:
    command = [sys.executable, __file__, "--part", "--model", model, "--quant", quant]
    for name in ("limit", "eval_limit", "epochs", "max_steps", "batch_size", "optim"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{model} / {quant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if value < 10 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell(row.get(h)) for h in HEADER) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "smollm2-135m"])
    parser.add_argument("--quants", nargs="+", default=["none", "8bit", "4bit"])
    parser.add_argument("--limit", type=int, default=112, help="training rows (0: all 700)")
    parser.add_argument("--eval-limit", type=int, default=56, help="test rows (0: all 280)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--optim", default="adamw")
    parser.add_argument("--require-cuda", action="store_true", help="fail unless CUDA is used")
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks" / "results" / "quantization.json")
    )
    parser.add_argument("--table", help="also write the markdown table to this file")
    parser.add_argument("--part", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--quant", help=argparse.SUPPRESS)
    args = parser.parse_args()
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
            print(f"{model} {quant}: {row['samples_per_second']:.1f} samples/s", flush=True)
            reference = reference or (row if quant == "none" else None)
            if reference:
                row["memory_ratio"] = row["peak_memory_mb"] / reference["peak_memory_mb"]
                row["weights_ratio"] = row["weights_mb"] / reference["weights_mb"]
                row["speed_ratio"] = row["samples_per_second"] / reference["samples_per_second"]
            rows.append(row)
    table = format_table(rows)
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
    output.write_text(json.dumps(result, indent=2))
    if args.table:
        Path(args.table).write_text(table + "\n")
    print(f"written to {output}")


if __name__ == "__main__":
    from finetune import runtime

    runtime.configure()  # the command's CPU settings, inherited by worker processes
    main()
