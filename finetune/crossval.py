"""Stratified K-fold cross-validation: K complete runs, one summary of their spread.

With a few hundred rows, one train/test split gives a figure that moves by several points
with the seed. Here every labelled row (training and evaluation data pooled) is held out
exactly once: fold k is an ordinary run (`finetune.run.train`) written to `<run>/fold-k`,
trained on the other folds and scored on fold k, baselines included. The top-level
`metrics.json` holds the mean of each figure over the folds (same keys as a single run, so
tables and scripts read it alike), its standard deviation as `<name>_std`, and every fold's
figures; `report.md` shows them as mean ± std with pooled out-of-fold ROC and calibration
plots. Each fold folder stays a complete run that `Run.load` reads.

This module runs the folds (the recipe API layer, beside `finetune.run`); the folds themselves
and their summary are `finetune.evaluation.folds`', the report `finetune.reporting.crossval`'s.
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
from finetune.data.tables import Examples
from finetune.evaluation.folds import fold_indices, summarise
from finetune.files import output_folder, staged
from finetune.reporting.crossval import write_summary_report
from finetune.run import RecipeHooks, is_main_process, positive_label, train
from finetune.runtime import environment, peak_memory_mb
from finetune.splits import Fold, Splits, check_folds

if TYPE_CHECKING:
    from finetune.evaluation.context import EvalContext


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

    def __init__(self, recipe: RecipeHooks, config: Config, train: Examples, evaluation: Examples):
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


def pooled_examples(recipe: RecipeHooks, config: Config) -> Examples:
    """Every labelled row the run may use: the recipe's split (`Recipe.split`), pooled.

    A folder of images holding train/ and test/ is the dataset's split, whose class
    sub-folders are pooled; so are a recipe's own validation rows."""
    return recipe.split(config).pooled()


def recipe_folds(
    recipe: RecipeHooks, config: Config
) -> tuple[Examples, list[Fold], str, list[str] | None]:
    """The pooled rows, their folds, how the folds were made and what each holds out (None:
    unnamed): the recipe's own (`Splits.folds`, e.g. grouped by patient), else `eval.folds`
    stratified, seeded folds."""
    splits = recipe.split(config)
    examples, k = splits.pooled(), config.eval.folds
    if splits.folds is not None:
        check_folds(splits.folds, len(examples), k)
        return examples, splits.folds, f"split into the recipe's own {k} folds", splits.fold_names
    seed = config.data.split_seed
    how = f"split into {k} stratified folds (split seed {seed})"
    return examples, fold_indices(examples.labels, k, seed), how, None


def cross_validate(
    recipe: RecipeHooks, config: Config, show_progress: bool = True
) -> CrossValidation:
    """Run one fine-tune per fold and write the summary folder (atomically, like a run)."""
    from finetune.modeling.models import pick_device

    started = time.perf_counter()
    config = config.validate()
    folder = output_folder(config.output, config.recipe, config.overwrite)
    k, seed = config.eval.folds, config.train.seed
    examples, splits, how, names = recipe_folds(recipe, config)
    # One positive class for every fold, resolved once as a single run would (flag, card, pair).
    positive = positive_label(
        sorted(set(examples.labels)), config.data.positive_label, recipe.card(config)
    )
    per_fold = replace(config, data=replace(config.data, positive_label=positive))
    if not is_main_process():
        # Data-parallel workers train every fold in step with process 0, which alone writes:
        # their fold runs write nothing, so they get a folder name that is never created.
        unused = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        fold_metrics, _, _ = _run_folds(
            recipe, per_fold, examples, splits, unused, None, False, names, workers=1
        )
        return CrossValidation(folder, config, summarise(fold_metrics))

    workers = fold_workers(per_fold, k)
    with staged(folder) as tmp:
        fold_metrics, out_of_fold, labels = _run_folds(
            recipe, per_fold, examples, splits, tmp, folder, show_progress, names, workers
        )
        metrics = summarise(fold_metrics)
        metrics["eval_source"] = f"{examples.source} ({k}-fold cross-validation)"
        wall = time.perf_counter() - started
        env = environment(pick_device(), seed)
        env.update(
            wall_seconds=round(wall, 2),
            peak_rss_mb=round(peak_memory_mb(children=True), 1),
            fold_workers=workers,
        )
        save_yaml(replace(config, output=str(folder), overwrite=False), tmp / "config.yaml")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        (tmp / "environment.json").write_text(json.dumps(env, indent=2), encoding="utf-8")
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
    recipe: RecipeHooks,
    config: Config,
    examples: Examples,
    splits: list[Fold],
    where: Path,
    final: Path | None,
    show_progress: bool,
    names: list[str] | None = None,
    workers: int = 1,
) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, dict[str, np.ndarray]]], list[str]]:
    """Train fold k into `where`/fold-k; returns each fold's metrics, its out-of-fold
    (labels, scores) and the label order. `final`: the folder `where` becomes (the fold
    configs are pointed at it); None for a process that writes nothing. `names`: what each
    fold holds out, for its sources. `workers` > 1: that many folds train at once, each in
    its own process (`fold_workers`)."""
    jobs = [
        _FoldJob(i, len(splits), train_rows, held_rows, names[i - 1] if names else None)
        for i, (train_rows, held_rows) in enumerate(splits, start=1)
    ]
    if workers > 1:
        results = _train_in_processes(recipe, config, examples, jobs, where, workers, show_progress)
    else:
        results = [_train_fold(recipe, config, examples, job, where, show_progress) for job in jobs]
    if final is not None:
        for job in jobs:
            _point_config_at(where / job.name / "config.yaml", config, final / job.name)
    fold_metrics = [
        {"fold": job.index, "folder": job.name, **r.metrics}
        for job, r in zip(jobs, results, strict=True)
    ]
    out_of_fold = [(r.y_eval, r.scores) for r in results]
    return fold_metrics, out_of_fold, results[-1].labels


@dataclass(frozen=True)
class _FoldJob:
    index: int
    k: int
    train_rows: list[int]
    held_rows: list[int]
    held_name: str | None  # what the fold holds out (a site), for its source

    @property
    def name(self) -> str:
        return f"fold-{self.index}"


@dataclass
class _FoldResult:
    metrics: dict[str, Any]
    labels: list[str]
    y_eval: np.ndarray | None
    scores: dict[str, np.ndarray]


def _train_fold(
    recipe: RecipeHooks,
    config: Config,
    examples: Examples,
    job: _FoldJob,
    where: Path,
    show_progress: bool,
) -> _FoldResult:
    """One fold: an ordinary run on the other folds' rows, scored on this fold's."""
    i, k = job.index, job.k
    fold = _FoldRecipe(
        recipe,
        config,
        examples.subset(job.train_rows, f"{examples.source} (fold {i}/{k}: training part)"),
        examples.subset(
            job.held_rows,
            f"{examples.source} (fold {i}/{k}: held out"
            + (f": {job.held_name})" if job.held_name else ")"),
        ),
    )
    fold_config = replace(
        config,
        data=replace(config.data, path=None, eval_path=None),
        eval=replace(config.eval, folds=0),
        output=str(where / job.name),
        overwrite=False,
    )
    if show_progress:
        print(
            f"fold {i}/{k}: {len(job.train_rows)} rows to train on, {len(job.held_rows)} held out"
        )
    run = train(fold, fold_config, show_progress=show_progress)
    return _FoldResult(dict(run.metrics), list(run.labels), fold.y_eval, fold.scores)


def fold_workers(config: Config, k: int) -> int:
    """How many folds train at once: `eval.fold_workers`, or with 0 (auto) one process per
    CPU core (at most 4) on a CPU-only, single-process run, else 1. A small model's training
    step uses a second core poorly, so two folds on one core each finish sooner than one
    after the other on two (docs/benchmarks.md)."""
    if config.eval.fold_workers:
        return min(config.eval.fold_workers, k)
    import torch

    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1
    return max(1, min(k, os.cpu_count() or 1, 4))


def _train_in_processes(
    recipe: RecipeHooks,
    config: Config,
    examples: Examples,
    jobs: list[_FoldJob],
    where: Path,
    workers: int,
    show_progress: bool,
) -> list[_FoldResult]:
    """The folds in `workers` fresh processes, each with its share of the CPU threads;
    results come back in fold order, whichever finishes first."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // workers)
    if show_progress:
        print(f"training {len(jobs)} folds, {workers} at a time ({threads} CPU thread(s) each)")
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # no forked torch state in the workers
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_limit_threads, initargs=(threads,)
    ) as pool:
        futures = {
            pool.submit(_train_fold, recipe, config, examples, job, where, False): job
            for job in jobs
        }
        results: dict[int, _FoldResult] = {}
        for future in as_completed(futures):
            job = futures[future]
            results[job.index] = future.result()
            if show_progress:
                seconds = time.perf_counter() - started
                print(
                    f"fold {job.index}/{job.k} done ({len(results)}/{len(jobs)}, {seconds:.0f} s)"
                )
    return [results[job.index] for job in jobs]


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _point_config_at(path: Path, config: Config, final: Path) -> None:
    """A fold's config.yaml names its final folder and the data the cross-validation read."""
    import yaml

    saved = load_yaml(path)
    saved["output"] = str(final)
    saved["data"]["path"], saved["data"]["eval_path"] = config.data.path, config.data.eval_path
    path.write_text(yaml.safe_dump(saved, sort_keys=False), encoding="utf-8")
