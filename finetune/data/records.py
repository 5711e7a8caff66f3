"""Tables of records (numbers, categories, free text) as text for an encoder, with their checks.

A row becomes one line the encoder reads, e.g. `age: 50 years; plasma glucose: 148 mg/dL;
BMI: 33.6 kg/m2; smoker: missing`. Names, units and column types come from the dataset's
data card when there is one, otherwise from the column headers and the values. Missing values
are written as `missing`, never filled. Identifier-like columns (ids, names, contact details)
are dropped before anything sees them. The raw columns travel alongside as
`Examples.features` for the raw-column baselines (finetune.evaluation.table_baselines), which
fit on exactly the same rows.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finetune.data.tables import (
    READERS,
    Examples,
    _row_numbers,
    check_scalars,
    find_column,
    label_strings,
)
from finetune.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


KINDS = ("numeric", "categorical", "text")
# Cells that mean "not recorded" in exported spreadsheets and R/UCI files (case-insensitive).
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "missing"})
# A column whose filled cells are at least this share numbers is numeric: its other cells are
# typos to fix, not categories (a blood pressure of "12O" must not silently become a category).
NUMERIC_SHARE = 0.8
# Non-numeric columns averaging this many words per cell are free text (notes), not categories.
TEXT_WORDS = 3.0
# Whole column names (lower case, words joined by "_") that identify a person or a row.
IDENTIFIER_NAMES = frozenset(
    {
        "rownames",
        "row_names",
        "index",
        "name",
        "full_name",
        "first_name",
        "last_name",
        "surname",
        "patient",
        "patient_name",
        "email",
        "e_mail",
        "phone",
        "phone_number",
        "telephone",
        "address",
        "street",
        "postcode",
        "zip_code",
        "date_of_birth",
        "dob",
    }
)
# Last word of a column name that marks an identifier: patient_id, PatientID, record uuid...
IDENTIFIER_SUFFIXES = frozenset({"id", "ids", "identifier", "uuid", "guid", "mrn", "ssn"})


@dataclass(frozen=True)
class Column:
    """How one table column reads in a record: its header, kind, words and unit."""

    name: str  # the column header in the file
    kind: str  # numeric, categorical or text
    title: str  # what the record text calls it
    unit: str = ""
    # Reference ranges from the card, ((upper bound or None, word), ...): a value below the
    # first bound it does not reach reads "148 mg/dL (impaired glucose tolerance)".
    bands: tuple[tuple[float | None, str], ...] = ()

    @classmethod
    def from_card(cls, name: str, kind: str, spec: dict[str, Any]) -> Column:
        bands = tuple((upper, str(word)) for upper, word in spec.get("bands") or ())
        return cls(name, kind, str(spec.get("name") or name), str(spec.get("unit") or ""), bands)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for a run's schema.json (`from_dict` reads it back)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "title": self.title,
            "unit": self.unit,
            "bands": [list(band) for band in self.bands],
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Column:
        bands = tuple((upper, str(word)) for upper, word in saved.get("bands") or ())
        return cls(saved["name"], saved["kind"], saved["title"], saved.get("unit") or "", bands)


def table_card(path: str | Path) -> dict[str, Any]:
    """The YAML header of a data card (finetune.data.cards), its `feature_columns` checked.

    Each feature column may give `name` (what records call it), `unit`, `type` (numeric,
    categorical or text; `categorical/text`, as `finetune data card --write` drafts it, means
    "infer which") and `bands` (reference ranges); units and bands only on numeric columns
    (checked again against the data's inferred kinds when a table is read). `positive_class`
    must be one of `classes`. The header gets `_file` (the card's path) for error messages.
    """
    from finetune.data.cards import read_card

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Data card not found: {path}.")
    header, _ = read_card(path)
    columns = header.get("feature_columns") or {}
    if not isinstance(columns, dict):
        raise UserError(
            f"{path}: 'feature_columns' must map column names to their name, unit and type."
        )
    for column, spec in columns.items():
        spec = spec or {}
        kind = spec.get("type")
        if kind is not None and kind not in (*KINDS, "categorical/text"):
            raise UserError(
                f"{path}: column '{column}' has type {kind!r}; use one of {', '.join(KINDS)}."
            )
        todo = [key for key in ("name", "unit") if str(spec.get(key)).strip().upper() == "TODO"]
        if todo:
            raise UserError(
                f"{path}: column '{column}' still has TODO as its {' and '.join(todo)}; "
                "fill it in or delete the line (records would print it)."
            )
        _check_bands(path, column, spec.get("bands"))
        if kind in ("categorical", "text"):
            _check_numeric_only(str(path), column, kind, spec)
    _check_positive_class(path, header)
    return {**header, "_file": str(path)}


def _check_numeric_only(card: str, column: str, kind: str, spec: dict[str, Any]) -> None:
    """Units and reference ranges describe numbers: on a category they print nonsense
    ("smoker: yes years") or cannot be compared at all."""
    for key, what in (("bands", "reference ranges compare numbers"), ("unit", "units")):
        if spec.get(key):
            raise UserError(
                f"{card}: column '{column}' is {kind} but has {key} ({what} only apply to "
                f"numeric columns); delete its {key}, or declare it `type: numeric` if it "
                "holds numbers."
            )


def _check_positive_class(path: Path, header: dict[str, Any]) -> None:
    positive, classes = header.get("positive_class"), header.get("classes")
    if positive is None or not classes:
        return
    if str(positive) not in {str(c) for c in classes}:
        raise UserError(
            f"{path}: positive_class {positive!r} is not one of its classes "
            f"({', '.join(map(str, classes))}); write one of them."
        )


def _check_bands(path: Path, column: str, bands: Any) -> None:
    if bands is None:
        return
    uppers = [b[0] for b in bands if isinstance(b, list | tuple) and len(b) == 2]
    numbers = [u for u in uppers if u is not None]
    well_formed = (
        isinstance(bands, list)
        and len(uppers) == len(bands)
        and all(isinstance(u, int | float) for u in numbers)
        and numbers == sorted(numbers)
        and None not in uppers[:-1]
    )
    if not well_formed:
        raise UserError(
            f"{path}: column '{column}' has malformed bands; write them as a list of "
            "[upper bound, word] pairs in increasing order, the last bound null for no limit, "
            "e.g. [[140, normal], [200, impaired glucose tolerance], [null, diabetic range]]."
        )


def table_examples(
    frame: pd.DataFrame,
    source: str,
    label_column: str | None,
    card: dict[str, Any] | None = None,
    positive_label: str | None = None,
    drop: list[str] | tuple[str, ...] = (),
    schema: dict[str, Any] | None = None,
) -> Examples:
    """Check a table and turn each row into a record text; labels when `label_column` is given.

    More than two label values need `positive_label`: that value against the rest. A column
    empty in every row is an error in labelled data (nothing to learn from it) but not in a
    file to predict on, where one patient may simply lack a measurement.

    With `schema` (a trained run's, see `run_schema`) the columns are read exactly as in
    training: same kinds, names, units and bands, nothing re-inferred or dropped for looking
    like an identifier in this file. A column the schema has and the file lacks is an error;
    one it does not have is named in a printed note and never read.
    """
    kind_of_file = READERS.get(Path(source).suffix.lower(), "rows")
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in frame.columns:  # a JSON object or list is not a measurement
        if frame[column].dtype == object:
            check_scalars(frame[column], column, source, kind_of_file)
    labels: list[str] = []
    if label_column is not None:
        label_column = find_column(frame, label_column, "label", source)
        labels = _binary_labels(
            frame[label_column], source, label_column, kind_of_file, positive_label
        )
    if schema is not None:
        columns, values, dropped = _schema_columns(frame, source, label_column, schema)
    else:
        columns, values, dropped = _read_columns(frame, source, label_column, card, drop)
    if not columns:
        raise UserError(f"{source}: no feature columns left besides the label.")
    import pandas as pd

    features = pd.DataFrame({c.name: values[c.name] for c in columns})
    # Travels with the rows (subsets and pooled folds keep it) so reports can list what was
    # dropped and the run can save the schema its records were rendered with.
    features.attrs.update(
        dropped=dropped, columns=[c.as_dict() for c in columns], label_column=label_column
    )
    texts = [record_text(row, columns) for row in features.itertuples(index=False)]
    return Examples(texts, labels, source, features)


def _read_columns(
    frame: pd.DataFrame,
    source: str,
    label_column: str | None,
    card: dict[str, Any] | None,
    drop: list[str] | tuple[str, ...],
) -> tuple[list[Column], dict[str, Any], dict[str, str]]:
    """Kinds from the card or the values; identifier-like columns dropped with a warning."""
    kind_of_file = READERS.get(Path(source).suffix.lower(), "rows")
    described = (card or {}).get("feature_columns") or {}
    card_name = (card or {}).get("_file") or "the data card"
    unknown = sorted(set(drop) - set(frame.columns))
    if unknown:
        raise UserError(
            f"{source}: options.drop_columns names columns the file does not have: "
            f"{', '.join(unknown)}. Columns found: {', '.join(frame.columns)}."
        )
    absent = [name for name in described if name not in frame.columns]
    if absent and label_column is not None:
        warnings.warn(
            f"{card_name} describes columns {source} does not have: {', '.join(absent)} "
            "(misspelt in the card or renamed in the file?).",
            UserWarning,
            stacklevel=3,
        )
    declared_ids = set((card or {}).get("identifier_columns") or [])
    columns: list[Column] = []
    values: dict[str, Any] = {}
    dropped = {name: "options.drop_columns" for name in drop}
    dropped.update({n: "identifier in the data card" for n in declared_ids if n in frame.columns})
    for name in frame.columns:
        if name == label_column or name in dropped:
            continue
        raw = _cells(frame[name])
        missing = raw.isna()
        if missing.all() and label_column is not None:
            raise UserError(
                f"{source}: column '{name}' is empty in every row. Remove it from the file or "
                f"drop it with --set options.drop_columns={name}."
            )
        spec = described.get(name) or {}
        kind = spec.get("type") if spec.get("type") in KINDS else _infer_kind(raw[~missing])
        if kind != "numeric":
            _check_numeric_only(card_name, name, kind, spec)
        # Identifiers go before parsing: a code column with a stray letter is not an error.
        reason = None if name in described else _identifier_name(name)
        if reason is None:
            parsed = _parse(raw, kind, name, source, kind_of_file)
            if name not in described:
                reason = _identifier_values(parsed[~missing], kind)
        if reason:
            warnings.warn(
                f"{source}: dropped column '{name}' ({reason}): identifiers never reach the "
                "model or the baselines. If it is a real measurement, describe it in a data "
                "card (--card).",
                UserWarning,
                stacklevel=3,
            )
            dropped[name] = reason
            continue
        values[name] = parsed
        columns.append(Column.from_card(name, kind, spec))
    return columns, values, dropped


def _schema_columns(
    frame: pd.DataFrame, source: str, label_column: str | None, schema: dict[str, Any]
) -> tuple[list[Column], dict[str, Any], dict[str, str]]:
    """The training columns read from `frame` as training read them."""
    import difflib

    kind_of_file = READERS.get(Path(source).suffix.lower(), "rows")
    columns = [Column.from_dict(saved) for saved in schema["columns"]]
    dropped = dict(schema.get("dropped") or {})
    known = {c.name for c in columns} | set(dropped) | {label_column, schema.get("label_column")}
    extra = [name for name in frame.columns if name not in known]
    missing = [c.name for c in columns if c.name not in frame.columns]
    if missing:
        close = difflib.get_close_matches(missing[0], extra, n=1)
        hint = f" (is '{close[0]}' the column '{missing[0]}' renamed?)" if close else ""
        raise UserError(
            f"{source}: lacks columns the model was trained on: {', '.join(missing)}{hint}. "
            "Add them with these names (leave a cell empty where a value is unknown); "
            f"columns found: {', '.join(frame.columns)}."
        )
    if extra:
        print(
            f"Note: {source} has columns the model was not trained on, ignored: {', '.join(extra)}."
        )
    values = {
        c.name: _parse(_cells(frame[c.name]), c.kind, c.name, source, kind_of_file) for c in columns
    }
    return columns, values, dropped


def _parse(raw: pd.Series, kind: str, name: str, source: str, kind_of_file: str) -> pd.Series:
    """Cells (missing markers already NaN) as numbers, or as strings for other kinds."""
    if kind == "numeric":
        return _numbers(raw, name, source, kind_of_file)
    # Categories coded as numbers read "2", not "2.0".
    return raw.map(lambda v: v if _is_missing(v) or isinstance(v, str) else _number_text(v)).astype(
        object
    )


SCHEMA_FILE = "schema.json"


def save_schema(folder: Path, features: pd.DataFrame) -> None:
    """Write the columns training read (kinds, record names, units, bands), the label column
    and what was dropped, so files scored later are rendered the same way (`run_schema`)."""
    import json

    if "columns" not in features.attrs:
        raise ValueError("features without the column attrs table_examples sets")
    schema = {
        "label_column": features.attrs.get("label_column"),
        "columns": features.attrs["columns"],
        "dropped": features.attrs.get("dropped", {}),
    }
    (folder / SCHEMA_FILE).write_text(json.dumps(schema, indent=2), encoding="utf-8")


def run_schema(config: Any) -> dict[str, Any] | None:
    """The training schema when `config` is a finished run's (what `Run.load` returns points
    at its folder); None while a run is being trained (its folder is new, or is being
    replaced with --overwrite) and for runs saved before schemas existed."""
    import json

    if not config.output or config.overwrite:
        return None
    folder = Path(config.output)
    if not (folder / "labels.json").is_file() or not (folder / SCHEMA_FILE).is_file():
        return None
    return json.loads((folder / SCHEMA_FILE).read_text(encoding="utf-8"))


def record_text(row: tuple | list, columns: list[Column]) -> str:
    """One row as `title: value unit; ...`, with `missing` for an empty cell."""
    parts = []
    for column, value in zip(columns, row, strict=True):
        if _is_missing(value):
            parts.append(f"{column.title}: missing")
            continue
        shown = _number_text(value) if column.kind == "numeric" else str(value)
        band = next((w for upper, w in column.bands if upper is None or value < upper), None)
        parts.append(
            f"{column.title}: {shown}"
            + (f" {column.unit}" if column.unit else "")
            + (f" ({band})" if band else "")
        )
    return "; ".join(parts)


def columns_of(features: pd.DataFrame, card: dict[str, Any] | None = None) -> list[Column]:
    """The columns of a features table as the records name them (card names and units)."""
    described = (card or {}).get("feature_columns") or {}
    return [Column.from_card(n, kind_of(features[n]), described.get(n) or {}) for n in features]


def kind_of(series: pd.Series) -> str:
    """numeric, categorical or text for a features column (what the baselines encode)."""
    from pandas.api.types import is_numeric_dtype

    if is_numeric_dtype(series):
        return "numeric"
    return "text" if _wordy(series.dropna()) else "categorical"


def records_section(
    train: pd.DataFrame, evaluation: pd.DataFrame, card: dict[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """Report facts about the records: format, columns, missing counts, dropped columns.

    Only aggregates and placeholders: a report never prints a patient's row.
    """
    columns = columns_of(train, card)
    template = "; ".join(
        f"{c.title}: <{c.kind}>"
        + (f" {c.unit}" if c.unit else "")
        + (" (<reference range>)" if c.bands else "")
        for c in columns
    )
    facts: dict[str, Any] = {"columns": {}, "dropped": dict(train.attrs.get("dropped", {}))}
    rows = []
    for c in columns:
        missing_eval = int(evaluation[c.name].isna().sum()) if c.name in evaluation else None
        facts["columns"][c.name] = {
            "kind": c.kind,
            "missing_train": int(train[c.name].isna().sum()),
            "missing_eval": missing_eval,
        }
        rows.append(
            f"| {c.name} | {c.title} | {c.kind} | {c.unit} | "
            f"{facts['columns'][c.name]['missing_train']} | {missing_eval} |"
        )
    lines = [
        "## Records",
        "",
        "Each row reaches the encoder as one line of text (placeholders here: reports never "
        "print patient rows):",
        "",
        f"`{template}`",
        "",
        "Missing values are written as `missing`, never filled in. The baselines read the raw "
        "columns instead, imputing inside their own pipelines from training rows only.",
        "",
        "| column | read as | kind | unit | missing (training rows) | missing (evaluation) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if facts["dropped"]:
        lines += [
            "Never read by the model or the baselines: "
            + "; ".join(f"`{name}` ({why})" for name, why in facts["dropped"].items()),
            "",
        ]
    return facts, lines


def _binary_labels(
    raw: pd.Series, source: str, column: str, kind_of_file: str, positive: str | None
) -> list[str]:
    labels = label_strings(raw, column, source, kind_of_file)
    found = sorted(Counter(labels))
    if len(found) <= 2:
        return labels
    shown = ", ".join(repr(v) for v in found[:10]) + (" …" if len(found) > 10 else "")
    if positive is None:
        raise UserError(
            f"{source}: column '{column}' has {len(found)} values ({shown}); this recipe predicts "
            "two classes. Pass --positive-label VALUE to predict that value against all others."
        )
    if positive not in found:
        raise UserError(
            f"{source}: --positive-label {positive!r} is not a value of column '{column}' "
            f"({shown})."
        )
    rest = f"not {positive}"
    return [label if label == positive else rest for label in labels]


def _cells(series: pd.Series) -> pd.Series:
    """Stripped strings (or the original numbers) with every missing marker as NaN."""
    from pandas.api.types import is_numeric_dtype

    if is_numeric_dtype(series) and not series.dtype == bool:
        return series.astype(float)
    as_text = series.astype(object).where(series.notna(), None)
    cleaned = [None if v is None else str(v).strip() for v in as_text]
    import pandas as pd

    result = pd.Series(cleaned, index=series.index, dtype=object)
    is_missing = result.isna() | result.astype(str).str.lower().isin(MISSING_TOKENS)
    return result.where(~is_missing, np.nan)


def _infer_kind(filled: pd.Series) -> str:
    """From the filled cells: numeric when mostly numbers, free text when wordy, else categories."""
    import pandas as pd
    from pandas.api.types import is_numeric_dtype

    if is_numeric_dtype(filled):
        return "numeric"
    numbers = pd.to_numeric(filled, errors="coerce")
    if len(filled) and numbers.notna().mean() >= NUMERIC_SHARE:
        return "numeric"
    return "text" if _wordy(filled) else "categorical"


def _wordy(filled: pd.Series) -> bool:
    return bool(len(filled)) and filled.astype(str).str.split().str.len().mean() >= TEXT_WORDS


def _numbers(raw: pd.Series, name: str, source: str, kind_of_file: str) -> pd.Series:
    import pandas as pd

    numbers = pd.to_numeric(raw, errors="coerce").astype(float)
    junk = raw.notna() & numbers.isna()
    if junk.any():
        first = raw[junk].iloc[0]
        raise UserError(
            f"{source}: column '{name}' holds numbers but has text that is not a number at "
            f"{_row_numbers(junk, kind_of_file)} (e.g. {first!r}). "
            "Fix those cells, or empty them to mark the value missing."
        )
    return numbers


def _identifier_name(name: str) -> str | None:
    words = re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
    words = re.sub(r"[^a-z0-9]+", "_", words).strip("_")
    if words in IDENTIFIER_NAMES or words.startswith("unnamed_"):
        return "its name marks a row or a person"
    if words.split("_")[-1] in IDENTIFIER_SUFFIXES:
        return "its name marks an identifier"
    return None


def _identifier_values(filled: pd.Series, kind: str) -> str | None:
    if len(filled) < 10 or not filled.is_unique:
        return None
    if kind == "categorical":
        return "a different short text in every row, like a name or a code"
    if kind == "numeric" and (np.diff(np.sort(filled.to_numpy(dtype=float))) == 1).all():
        return "consecutive whole numbers, like a row counter"
    return None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _number_text(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:.6g}"
