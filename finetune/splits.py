"""A run's data, split: the rows a model trains on, is evaluated on and is chosen on.

`Recipe.split(config)` returns a `Splits`; single runs and cross-validation both start there.
The engine's own pieces live here: a seeded, stratified hold-out (`hold_out`) and joining two
sets of examples (`concat`). This module reads no files and knows no recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

from finetune.data.tables import Examples, stratified_split
from finetune.errors import UserError

# A cross-validation fold: (rows it trains on, rows it holds out), as positions in
# `Splits.pooled()`.
Fold = tuple[list[int], list[int]]


@dataclass
class Splits:
    """Training and evaluation rows, and optionally the recipe's own validation rows and folds.

    `validation`: the rows that pick the kept epoch and the decision thresholds (e.g. the
    latest interactions, for a split by time). None: the engine holds out a seeded, stratified
    `data.val_fraction` of `train`.
    `folds`: the recipe's own cross-validation folds over `pooled()` (e.g. grouped by patient).
    None: `--folds K` makes K stratified, seeded folds.
    """

    train: Examples
    evaluation: Examples
    validation: Examples | None = None
    folds: list[Fold] | None = None

    def pooled(self) -> Examples:
        """Every labelled row: training, validation, then evaluation rows (what folds index)."""
        pooled = self.train
        if self.validation is not None:
            pooled = concat(pooled, self.validation)
        return concat(pooled, self.evaluation)


def hold_out(train: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """(kept, held-out) parts of `train`: a seeded, stratified `fraction` is held out."""
    if fraction <= 0:
        raise UserError("No evaluation data: pass --eval-data or set data.eval_fraction > 0.")
    kept, held = stratified_split(train, fraction, seed)
    source = train.source
    return (
        train.subset(kept, f"{source} (train part)"),
        train.subset(held, f"{source} (held-out {fraction:.0%}, split seed {seed})"),
    )


def concat(first: Examples, second: Examples, source: str | None = None) -> Examples:
    """`first`'s rows followed by `second`'s (side features too, when both have them)."""
    features = None
    if first.features is not None and second.features is not None:
        import pandas as pd

        features = pd.concat([first.features, second.features], ignore_index=True)
        # pandas keeps attrs (a table's schema) only when both parts agree: the first's.
        features.attrs = dict(first.features.attrs)
    return Examples(
        list(first.texts) + list(second.texts),
        list(first.labels) + list(second.labels),
        source or f"{first.source} + {second.source}",
        features,
        skipped=first.skipped + second.skipped,
    )


def check_folds(folds: list[Fold], n_rows: int, k: int) -> None:
    """A recipe's folds: `k` of them, each holding out rows of the pooled data, every row once."""
    if len(folds) != k:
        raise UserError(
            f"eval.folds is {k}, but the recipe's split defines {len(folds)} folds; "
            f"pass --folds {len(folds)}."
        )
    held = sorted(i for _, out in folds for i in out)
    if held != list(range(n_rows)):
        raise UserError(
            f"The recipe's folds must hold out each of the {n_rows} pooled rows exactly once."
        )
