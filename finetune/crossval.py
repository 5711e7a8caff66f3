"""Stratified K-fold cross-validation: K complete runs, one summary of their spread.

With a few hundred rows, one train/test split gives a figure that moves by several points
with the seed. Here every labelled row (training and evaluation data pooled) is held out
exactly once: fold k is an ordinary run (`finetune.run.train`) written to `<run>/fold-k`,
trained on the other folds and scored on fold k, baselines included. The top-level
`metrics.json` holds the mean of each figure over the folds (same keys as a single run, so
tables and scripts read it alike), its standard deviation as `<name>_std`, and every fold's
figures; `report.md` shows them as mean ± std with pooled out-of-fold ROC and calibration
plots. Each fold folder stays a complete run that `Run.load` reads.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finetune.config import Config, load_yaml, save_yaml
from finetune.data import Examples
from finetune.errors import UserError
from finetune.splits import Fold, Splits, check_folds

if TYPE_CHECKING:
    from finetune.recipe import EvalContext, Recipe

# Figures averaged over folds, for the model and each baseline (the binary ones when present).
AVERAGED = ("accuracy", "recall", "f1", "auc", "precision", "specificity", "brier")
# At each fold's own threshold (chosen on that fold's validation rows, inside its training
# part): figures on the held-out fold. Thresholds are listed per fold, never averaged.
OPERATING = ("recall", "specificity", "precision")


@dataclass
class CrossValidation:
    """What `Recipe.train` returns with `eval.folds >= 2`: the summary, and one run per fold."""

    folder: Path
    config: Config
    metrics: dict[str, Any]

    @property
    def fold_folders(self) -> list[Path]:
        return [self.folder / fold["folder"] for fold in self.metrics["folds"]]


class _FoldRecipe:
    """The user's recipe with one fold's (train, evaluation) split as its data.

    It also keeps the evaluation scores the engine hands to `extra_report`, so the summary
    can pool the out-of-fold predictions of the model and every baseline. The fold's config
    names no data files (the fold's split is its data); the recipe's hooks get the real one.
    """

    def __init__(self, recipe: Recipe, config: Config, train: Examples, evaluation: Examples):
        self._recipe = recipe
        self._config = config
        self._split = Splits(train, evaluation)
        self.scores: dict[str, np.ndarray] = {}
        self.y_eval: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._recipe, name)

    def split(self, config: Config) -> Splits:
        return self._split

    def card(self, config: Config) -> dict[str, Any] | None:
        return self._recipe.card(self._config)  # the real data's card, not "bundled data"'s

    def extra_report(self, context: EvalContext) -> tuple[dict[str, Any], list[str]]:
        self.scores, self.y_eval = dict(context.scores), context.y_eval
        # The recipe sees the configuration it was given (its data paths), not the fold's.
        return self._recipe.extra_report(replace(context, config=self._config))


def pooled_examples(recipe: Recipe, config: Config) -> Examples:
    """Every labelled row the run may use: the recipe's split (`Recipe.split`), pooled.

    A folder of images holding train/ and test/ is the dataset's split, whose class
    sub-folders are pooled; so are a recipe's own validation rows."""
    return recipe.split(config).pooled()


def recipe_folds(recipe: Recipe, config: Config) -> tuple[Examples, list[Fold], str]:
    """The pooled rows, their folds and how the folds were made: the recipe's own
    (`Splits.folds`, e.g. grouped by patient), else `eval.folds` stratified, seeded folds."""
    splits = recipe.split(config)
    examples, k = splits.pooled(), config.eval.folds
    if splits.folds is not None:
        check_folds(splits.folds, len(examples), k)
        return examples, splits.folds, f"split into the recipe's own {k} folds"
    seed = config.data.split_seed
    how = f"split into {k} stratified folds (split seed {seed})"
    return examples, fold_indices(examples.labels, k, seed), how


def fold_indices(labels: list[str], folds: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(train, held-out) row indices of each fold, stratified by label and seeded."""
    from collections import Counter

    from sklearn.model_selection import StratifiedKFold

    counts = Counter(labels)
    if len(counts) < 2:
        raise UserError("Cross-validation needs at least two classes in the data.")
    rarest, n_rarest = min(counts.items(), key=lambda kv: kv[1])
    if n_rarest < folds:
        raise UserError(
            f"--folds {folds} needs at least {folds} examples of every class; '{rarest}' has "
            f"{n_rarest}. Use fewer folds or add examples."
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [
        (train.tolist(), held.tolist())
        for train, held in splitter.split(np.zeros(len(labels)), labels)
    ]


def cross_validate(recipe: Recipe, config: Config, show_progress: bool = True) -> CrossValidation:
    """Run one fine-tune per fold and write the summary folder (atomically, like a run)."""
    from finetune.models import pick_device
    from finetune.run import (
        environment,
        is_main_process,
        output_folder,
        peak_memory_mb,
        positive_label,
        staged,
    )

    started = time.perf_counter()
    config = config.validate()
    folder = output_folder(config)
    k, seed = config.eval.folds, config.train.seed
    examples, splits, how = recipe_folds(recipe, config)
    # One positive class for every fold, resolved once as a single run would (flag, card, pair).
    positive = positive_label(
        sorted(set(examples.labels)), config.data.positive_label, recipe.card(config)
    )
    per_fold = replace(config, data=replace(config.data, positive_label=positive))
    if not is_main_process():
        # Data-parallel workers train every fold in step with process 0, which alone writes:
        # their fold runs write nothing, so they get a folder name that is never created.
        unused = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        fold_metrics, _, _ = _run_folds(recipe, per_fold, examples, splits, unused, None, False)
        return CrossValidation(folder, config, summarise(fold_metrics))

    with staged(folder) as tmp:
        fold_metrics, out_of_fold, labels = _run_folds(
            recipe, per_fold, examples, splits, tmp, folder, show_progress
        )
        metrics = summarise(fold_metrics)
        metrics["eval_source"] = f"{examples.source} ({k}-fold cross-validation)"
        wall = time.perf_counter() - started
        env = environment(pick_device(), seed)
        env.update(wall_seconds=round(wall, 2), peak_rss_mb=round(peak_memory_mb(), 1))
        save_yaml(replace(config, output=str(folder), overwrite=False), tmp / "config.yaml")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "environment.json").write_text(json.dumps(env, indent=2))
        y_pooled = np.concatenate([y for y, _ in out_of_fold])
        scores = {
            name: np.concatenate([s[name] for _, s in out_of_fold]) for name in out_of_fold[0][1]
        }
        # Pooled out-of-fold probabilities, like a run's: `finetune report` draws from them.
        np.savez_compressed(tmp / "scores.npz", y_true=y_pooled, **scores)
        write_summary_report(
            tmp,
            f"{recipe.title}: {k}-fold cross-validation report",
            metrics,
            labels,
            {
                "recipe": recipe.title,
                "data": f"{examples.source}: {len(examples)} rows, pooled and {how}; each row "
                "is held out exactly once",
                "per fold": "an ordinary run trained on the other folds ("
                + (
                    f"{config.data.val_fraction:.0%} of them picking the best epoch"
                    if config.data.val_fraction > 0
                    else "no validation hold-out: the last epoch is kept"
                )
                + "), baselines on the same rows, scored on the held-out fold",
                "model": f"{config.model.name}, LoRA r={config.model.lora_r}, quantization "
                f"{config.model.quant}, head initialisation {config.model.head_init}",
                "training": f"{config.train.epochs:g} epochs, batch {config.train.batch_size}, "
                f"lr {config.train.learning_rate:g} (head {config.train.head_learning_rate:g}), "
                f"class weights {config.train.class_weight}",
                "wall time": f"{wall:.1f} s for all folds",
                "peak memory": f"{env['peak_rss_mb']:.0f} MB RSS",
                "seed": seed,
            },
            y_pooled,
            scores,
        )
    return CrossValidation(folder, config, metrics)


def _run_folds(
    recipe: Recipe,
    config: Config,
    examples: Examples,
    splits: list[tuple[list[int], list[int]]],
    where: Path,
    final: Path | None,
    show_progress: bool,
) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, dict[str, np.ndarray]]], list[str]]:
    """Train fold k into `where`/fold-k; returns each fold's metrics, its out-of-fold
    (labels, scores) and the label order. `final`: the folder `where` becomes (the fold
    configs are pointed at it); None for a process that writes nothing."""
    from finetune.run import train

    k = len(splits)
    fold_metrics: list[dict[str, Any]] = []
    out_of_fold: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    labels: list[str] = []
    for i, (train_rows, held_rows) in enumerate(splits, start=1):
        name = f"fold-{i}"
        fold = _FoldRecipe(
            recipe,
            config,
            examples.subset(train_rows, f"{examples.source} (fold {i}/{k}: training part)"),
            examples.subset(held_rows, f"{examples.source} (fold {i}/{k}: held out)"),
        )
        fold_config = replace(
            config,
            data=replace(config.data, path=None, eval_path=None),
            eval=replace(config.eval, folds=0),
            output=str(where / name),
            overwrite=False,
        )
        if show_progress:
            print(f"fold {i}/{k}: {len(train_rows)} rows to train on, {len(held_rows)} held out")
        run = train(fold, fold_config, show_progress=show_progress)
        labels = run.labels
        fold_metrics.append({"fold": i, "folder": name, **run.metrics})
        out_of_fold.append((fold.y_eval, fold.scores))
        if final is not None:
            _point_config_at(where / name / "config.yaml", config, final / name)
        del run  # one model in memory at a time
    return fold_metrics, out_of_fold, labels


def _point_config_at(path: Path, config: Config, final: Path) -> None:
    """A fold's config.yaml names its final folder and the data the cross-validation read."""
    import yaml

    saved = load_yaml(path)
    saved["output"] = str(final)
    saved["data"]["path"], saved["data"]["eval_path"] = config.data.path, config.data.eval_path
    path.write_text(yaml.safe_dump(saved, sort_keys=False), encoding="utf-8")


def _spread(values: list[Any]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) of the defined values."""
    defined = [float(v) for v in values if v is not None]
    if not defined:
        return None, None
    std = float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0
    return float(np.mean(defined)), std


def _average(entries: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key in AVERAGED:
        if any(key in entry for entry in entries):
            summary[key], summary[f"{key}_std"] = _spread([e.get(key) for e in entries])
    points = [e.get("operating_point") for e in entries]
    if any(points):
        defined = [p for p in points if p]
        point: dict[str, Any] = {
            "target_recall": defined[0]["target_recall"],
            "chosen_on": "each fold's validation rows (inside its training part)",
            "thresholds": [p["threshold"] for p in defined],
        }
        for key in OPERATING:
            point[key], point[f"{key}_std"] = _spread([p[key] for p in defined])
        summary["operating_point"] = point
    return summary


def summarise(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """The top-level metrics.json: fold means under the usual keys, `*_std`, and every fold."""
    metrics = _average(folds)
    for key in ("positive_label", "average", "primary_metric"):
        if key in folds[0]:
            metrics[key] = folds[0][key]
    names = list(folds[0].get("baselines", {}))
    metrics["baselines"] = {
        name: _average([fold["baselines"][name] for fold in folds]) for name in names
    }
    metrics.update(
        n_folds=len(folds),
        n_eval=sum(fold["n_eval"] for fold in folds),
        train_seconds=round(sum(fold.get("train_seconds", 0.0) for fold in folds), 2),
        std="sample standard deviation (ddof=1) over folds",
        folds=[
            {
                "fold": fold["fold"],
                "folder": fold["folder"],
                **{k: fold.get(k) for k in ("n_train", "n_val", "n_eval", "best_epoch")},
                **{k: fold[k] for k in AVERAGED if k in fold},
                "baselines": {
                    name: {k: fold["baselines"][name].get(k) for k in AVERAGED} for name in names
                },
            }
            for fold in folds
        ],
    )
    return metrics


def write_summary_report(
    folder: Path,
    title: str,
    metrics: dict[str, Any],
    labels: list[str],
    facts: dict[str, Any],
    y_pooled: np.ndarray,
    scores: dict[str, np.ndarray],
) -> None:
    """report.md: mean ± std tables, the folds with links to their reports, pooled plots."""
    import matplotlib

    from finetune.metrics import HEADLINE, MODEL_NAME
    from finetune.report import (
        _cell,
        _fmt,
        _markdown_table,
        metrics_table,
        plot_calibration,
        plot_roc,
    )

    matplotlib.use("Agg")
    k = metrics["n_folds"]
    entries = {MODEL_NAME: metrics, **metrics["baselines"]}
    parts = [
        f"# {title}",
        "",
        _markdown_table(["", ""], [[f"**{key}**", str(value)] for key, value in facts.items()]),
        "",
        f"## Results: mean ± standard deviation over {k} folds",
        "",
        "Every method is fitted on the same training rows and scored on the same held-out fold; "
        "the spread is the sample standard deviation over folds.",
        "",
        _markdown_table(["method", *HEADLINE], metrics_table(metrics)),
        "",
    ]
    if len(labels) == 2:
        parts += [
            f"Positive class: {metrics.get('positive_label')}. Recall is sensitivity; Brier "
            "score is the mean squared error of P(positive), lower is better.",
            "",
            _markdown_table(
                ["method", "specificity", "precision", "Brier"],
                [
                    [name, *[_cell(m, key) for key in ("specificity", "precision", "brier")]]
                    for name, m in entries.items()
                ],
            ),
            "",
        ]
        points = {n: m["operating_point"] for n, m in entries.items() if m.get("operating_point")}
        if points:
            target = next(iter(points.values()))["target_recall"]
            parts += [
                f"Decision threshold for recall {target:g}: each fold chooses it on its own "
                "validation rows (inside its training part); the figures are what that fixed "
                "threshold gives on the held-out fold, so recall misses the target by chance "
                "as it would on new patients:",
                "",
                _markdown_table(
                    ["method", *OPERATING, "thresholds per fold"],
                    [
                        [
                            n,
                            *[_cell(p, key) for key in OPERATING],
                            ", ".join(f"{t:.3f}" for t in p["thresholds"]),
                        ]
                        for n, p in points.items()
                    ],
                ),
                "",
            ]
        plots = folder / "plots"
        plots.mkdir(exist_ok=True)
        plot_roc(y_pooled, scores, plots / "roc.png")
        plot_calibration(y_pooled, scores, plots / "calibration.png")
        parts += [
            "ROC and calibration of the pooled out-of-fold predictions (every row scored by "
            "the fold that held it out):",
            "",
            "![ROC](plots/roc.png)",
            "",
            "![calibration](plots/calibration.png)",
            "",
        ]
    methods = list(entries)
    parts += [
        "## Folds",
        "",
        "AUC of each method on each held-out fold; every fold folder is a complete run "
        "(model, report, predictions) that `recipe.load(folder)` reloads.",
        "",
        _markdown_table(
            ["fold", "rows fitted", "held out", "kept epoch", *methods],
            [
                [
                    f"[{fold['folder']}]({fold['folder']}/report.md)",
                    str(fold["n_train"]),
                    str(fold["n_eval"]),
                    str(fold["best_epoch"]),
                    *[_fmt(fold.get("auc"))],
                    *[_fmt(fold["baselines"][name].get("auc")) for name in methods[1:]],
                ]
                for fold in metrics["folds"]
            ],
        ),
        "",
    ]
    kept_start = [f["fold"] for f in metrics["folds"] if f["best_epoch"] == 0]
    if kept_start:
        parts += [
            f"In fold(s) {', '.join(map(str, kept_start))} the validation rows preferred the "
            "starting point (the head fitted on frozen embeddings) to every fine-tuned epoch.",
            "",
        ]
    (folder / "report.md").write_text("\n".join(parts), encoding="utf-8")
