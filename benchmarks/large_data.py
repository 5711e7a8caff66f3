"""Does memory stay flat as the training file grows? In memory vs `--memory-map`, 1x and 10x.

    python benchmarks/large_data.py                        # Banking77 train x1 and x10 (~6 min)
    python benchmarks/large_data.py --factors 1,10,100     # add a 1M-row file (~25 min)
    python benchmarks/large_data.py --data DIR --model PATH --factors 1,2 --max-steps 2  # smoke

The training file is `--data`'s train.csv repeated `factor` times (Banking77: 10,003 rows per
copy; each copy's texts get a " #k" suffix so no row repeats). Every run trains the
customer-service recipe for the same `--max-steps` (so the training work is equal and only the
data grows), is scored on the first `--eval-rows` rows of test.csv, and fits the baselines on
the same capped sample (`eval.baseline_max_rows`), so the only thing that grows is the data
the run holds. Each run is its own process; its memory is read from /proc every 50 ms:
`peak_rss_mb` is the kernel's high-water mark (VmHWM), which counts pages of memory-mapped
files the run touched: they are page cache, which the kernel reclaims under pressure.
`peak_anon_mb` is the sampled peak of anonymous memory (RssAnon): what cannot be reclaimed
without swap, so what decides whether a file larger than RAM trains. Ratios are each mode's
largest factor against its own factor 1, in this invocation.
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

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"
BUNDLED = ROOT / "recipes" / "data" / "customer_service"
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon")


def status(pid: int) -> dict[str, float]:
    """Memory fields of /proc/PID/status in MB (empty once the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in STATUS_FIELDS:
            out[name] = int(value.split()[0]) / 1024
    return out


def run_one(command: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {name: 0.0 for name in STATUS_FIELDS}
    while process.poll() is None:
        for name, value in status(process.pid).items():
            peak[name] = max(peak[name], value)
        time.sleep(0.05)
    output = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}\n{output[-3000:]}")
    return {
        "peak_rss_mb": round(peak["VmHWM"], 1),
        "peak_anon_mb": round(peak["RssAnon"], 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def make_files(data: Path, factors: list[int], eval_rows: int, folder: Path, text_column: str):
    import pandas as pd

    train = pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(data / "test.csv", dtype=str, keep_default_na=False)
    test.head(eval_rows).to_csv(folder / "eval.csv", index=False)
    files = {}
    for factor in factors:
        path = folder / f"train_x{factor}.csv"
        with path.open("w", encoding="utf-8") as handle:
            for copy in range(factor):
                part = train.copy()
                if copy:
                    part[text_column] = part[text_column] + f" #{copy}"
                part.to_csv(handle, index=False, header=copy == 0)
        files[factor] = path
    return files, folder / "eval.csv", len(train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="Folder with train.csv, test.csv.")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default=None, help="Default: category for Banking77.")
    parser.add_argument("--factors", default="1,10")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--baseline-rows", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/large_data.json")
    args = parser.parse_args()
    data = args.data or (DEFAULT_DATA if DEFAULT_DATA.is_dir() else BUNDLED)
    label_column = args.label_column or ("category" if data == DEFAULT_DATA else "label")
    factors = [int(f) for f in args.factors.split(",")]

    rows = []
    with tempfile.TemporaryDirectory(prefix="large-data-") as tmp:
        folder = Path(tmp)
        files, eval_file, base_rows = make_files(
            data, factors, args.eval_rows, folder, args.text_column
        )
        for mode in ("in memory", "memory-mapped"):
            for factor in factors:
                command = [
                    sys.executable,
                    "-m",
                    "finetune.cli",
                    "customer-service",
                    "train",
                    "--data",
                    str(files[factor]),
                    "--eval-data",
                    str(eval_file),
                    "--text-column",
                    args.text_column,
                    "--label-column",
                    label_column,
                    "--model",
                    args.model,
                    "--max-steps",
                    str(args.max_steps),
                    "--output",
                    str(folder / f"run-{mode[:2]}-{factor}"),
                    "--set",
                    "data.val_fraction=0",
                    "--set",
                    f"eval.baseline_max_rows={args.baseline_rows}",
                ]
                if mode == "memory-mapped":
                    command.append("--memory-map")
                measured = run_one(command)
                metrics = json.loads(
                    (folder / f"run-{mode[:2]}-{factor}/metrics.json").read_text(encoding="utf-8")
                )
                rows.append(
                    {
                        "mode": mode,
                        "factor": factor,
                        "train_rows": base_rows * factor,
                        "train_file_mb": round(files[factor].stat().st_size / 2**20, 1),
                        **measured,
                        "accuracy": round(metrics["accuracy"], 4),
                    }
                )
                print(rows[-1], flush=True)

    for row in rows:
        first = next(r for r in rows if r["mode"] == row["mode"] and r["factor"] == factors[0])
        row["rss_ratio"] = round(row["peak_rss_mb"] / first["peak_rss_mb"], 2)
        row["anon_ratio"] = round(row["peak_anon_mb"] / first["peak_anon_mb"], 2)
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "data": str(data),
        "model": args.model,
        "max_steps": args.max_steps,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    from finetune import runtime

    runtime.configure()  # the command's CPU settings, inherited by worker processes
    main()
