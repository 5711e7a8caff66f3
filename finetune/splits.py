"""A run's data, split: the rows a model trains on, is evaluated on and is chosen on.

`Recipe.split(config)` returns a `Splits`; single runs and cross-validation both start there.
The engine's own pieces live here: a seeded, stratified hold-out (`hold_out`, `split_rows`)
and joining two sets of examples (`concat`). Examples with `groups` (patients, sites) are split
by group: the evaluation hold-out, the validation rows and the folds (`group_folds`) never put
one group on both sides (scikit-learn's StratifiedGroupKFold: whole groups, classes balanced
as far as whole groups allow). This module reads no files and knows no recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    None: `--folds K` makes K stratified, seeded folds. `fold_names`: what each fold holds out
    (e.g. a hospital), named in its folder's sources.
    """

    train: Examples
    evaluation: Examples
    validation: Examples | None = None
    folds: list[Fold] | None = None
    fold_names: list[str] | None = None

    def pooled(self) -> Examples:
        """Every labelled row: training, validation, then evaluation rows (what folds index)."""
        pooled = self.train
        if self.validation is not None:
            pooled = concat(pooled, self.validation)
        # A recipe that only defines folds has no evaluation rows: nothing to name.
        return concat(pooled, self.evaluation) if len(self.evaluation) else pooled


def hold_out(train: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """(kept, held-out) parts of `train`: a seeded, stratified `fraction` is held out (whole
    groups when the examples have them)."""
    if fraction <= 0:
        raise UserError("No evaluation data: pass --eval-data or set data.eval_fraction > 0.")
    kept, held = split_rows(train, fraction, seed)
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
    groups = None
    if first.groups is not None and second.groups is not None:
        groups = list(first.groups) + list(second.groups)
    return Examples(
        list(first.texts) + list(second.texts),
        list(first.labels) + list(second.labels),
        source or f"{first.source} + {second.source}",
        features,
        skipped=first.skipped + second.skipped,
        groups=groups,
    )


def split_rows(examples: Examples, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row positions (kept, held out): about `fraction` held out, stratified and seeded;
    whole groups when `examples.groups` is set."""
    if examples.groups is None or fraction <= 0:
        return stratified_split(examples, fraction, seed)
    k = max(2, round(1 / fraction))
    kept, held = group_folds(examples.labels, examples.groups, k, seed)[0]
    return sorted(kept), sorted(held)


def group_folds(labels: Sequence[str], groups: Sequence[str], k: int, seed: int) -> list[Fold]:
    """`k` folds (training rows, held-out rows) that hold out whole groups, classes balanced
    as far as whole groups allow; seeded."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups))
    if n_groups < k:
        raise UserError(
            f"Splitting by group needs at least {k} groups for {k} parts; the data has "
            f"{n_groups}. Use fewer folds (--folds), a larger data.val_fraction or "
            "data.eval_fraction, or --holdout-group to hold out one group."
        )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    rows = np.zeros(len(labels))
    return [
        (train.tolist(), held.tolist())
        for train, held in splitter.split(rows, list(labels), list(groups))
    ]


def group_rows(examples: Examples, value: str) -> tuple[list[int], list[int]]:
    """Row positions (the other groups', group `value`'s): hold one group out."""
    if examples.groups is None:
        raise ValueError("group_rows needs examples with groups")
    found = sorted(set(examples.groups))
    if value not in found:
        shown = ", ".join(found[:20]) + (" ..." if len(found) > 20 else "")
        raise UserError(f"{examples.source}: no group {value!r} to hold out; groups: {shown}.")
    held = [i for i, group in enumerate(examples.groups) if group == value]
    others = [i for i, group in enumerate(examples.groups) if group != value]
    return others, held


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
