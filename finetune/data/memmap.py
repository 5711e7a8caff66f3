"""Training data larger than memory (`data.memory_map`): texts, labels and token ids on disk.

`datasets` converts a CSV, TSV or Parquet file, a few thousand rows at a time, into Arrow
files in a scratch folder (a JSONL file is read a line at a time here), which are then
memory-mapped. `Column` (columns.py) is what the engine sees instead of a list. Training,
inference and the checks only ever index items, so they run unchanged, and the Python heap
holds a few integers per row (label id, length, split membership) instead of the rows
themselves. Pages of the mapped files are the kernel's page cache: it drops them under memory
pressure, which is what lets a file larger than RAM train.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.data.columns import CHUNK, Column, open_mapped, scratch
from finetune.data.tables import (
    CSV_OPTIONS,
    NESTED,
    READ_ERRORS,
    Examples,
    _label_string,
    check_file,
    find_column,
    nested_error,
)
from finetune.errors import UserError, first_line

if TYPE_CHECKING:
    import datasets


def load_examples(path: str | Path, text_column: str, label_column: str | None) -> Any:
    """Like `tables.load_examples`, with the same checks and messages, but memory-mapped."""
    import pyarrow as pa

    path = Path(path)
    kind = check_file(path)  # the same checks and messages as an in-memory read
    source = str(path)
    text_column, label_column, batches = _batches(path, kind, text_column, label_column)
    schema = pa.schema([("text", pa.string()), ("label", pa.string())])
    out = scratch() / f"{uuid.uuid4().hex}.arrow"
    offset = 2 if kind in ("csv", "tsv") else 1  # the header is line 1 of a CSV
    faults = _Faults(text_column, label_column, source, "lines" if offset == 2 else "rows")
    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        start = 0
        for texts, labels in batches:
            faults.scan(texts, labels, start + offset)
            start += len(texts)
            if faults.found():
                continue  # keep scanning to count the faulty rows; nothing is written after this
            writer.write_batch(
                pa.record_batch(
                    [
                        pa.array([str(t) for t in texts], pa.string()),
                        pa.array(
                            [_label_string(v) for v in labels] if labels else [""] * len(texts)
                        ),
                    ],
                    schema=schema,
                )
            )
    if start == 0:
        raise UserError(f"{path} has no rows.")
    faults.raise_first()
    mapped = open_mapped(out)
    labels = Column(mapped, "label") if label_column else []
    return Examples(Column(mapped, "text"), labels, source)


class _Faults:
    """The rows an in-memory read would refuse, collected over all batches: a JSON object or
    list in a cell, an empty text, a missing label (the first kind found is reported)."""

    def __init__(self, text_column: str, label_column: str | None, source: str, where: str):
        self.text_column, self.label_column = text_column, label_column
        self.source, self.where = source, where
        self.nested: dict[str, list[int]] = {}
        self.empty_text: list[int] = []
        self.no_label: list[int] = []

    def scan(self, texts: list[Any], labels: list[Any] | None, first: int) -> None:
        for i, text in enumerate(texts):
            label = labels[i] if labels is not None else ""
            for column, value in ((self.text_column, text), (self.label_column, label)):
                if isinstance(value, NESTED):
                    self.nested.setdefault(str(column), []).append(first + i)
            if text is None or not str(text).strip():
                self.empty_text.append(first + i)
            if labels is not None and (label is None or not str(label).strip()):
                self.no_label.append(first + i)

    def found(self) -> bool:
        return bool(self.nested or self.empty_text or self.no_label)

    def raise_first(self) -> None:
        for column, rows in self.nested.items():
            raise nested_error(self.source, column, _rows(rows, self.where))
        if self.empty_text:
            raise UserError(
                f"{self.source}: empty text in column '{self.text_column}' at "
                f"{_rows(self.empty_text, self.where)}. Remove or fill those rows."
            )
        if self.no_label:
            raise UserError(
                f"{self.source}: missing label in column '{self.label_column}' at "
                f"{_rows(self.no_label, self.where)}. Label or remove those rows."
            )


Batches = Iterator[tuple[list[Any], list[Any] | None]]


def _batches(
    path: Path, kind: str, text_column: str, label_column: str | None
) -> tuple[str, str | None, Batches]:
    """The checked column names and the (texts, labels) of the file, CHUNK rows at a time.

    JSONL is read here, a line at a time: `datasets` would turn a column with a JSON object in
    one row into JSON text in every row ('"hello"'), and a number/text mix likewise."""
    source = str(path)
    if kind == "jsonl":
        columns = _jsonl_columns(path)
    else:
        table = _convert(path, kind).data.table
        columns = table.column_names
    text_column = find_column(columns, text_column, "text", source)
    if label_column is not None:
        label_column = find_column(columns, label_column, "label", source)
    if kind == "jsonl":
        return text_column, label_column, _jsonl_batches(path, text_column, label_column)
    wanted = table.select([c for c in (text_column, label_column) if c is not None])

    def batches() -> Batches:
        for start in range(0, len(wanted), CHUNK):
            batch = wanted.slice(start, CHUNK).to_pydict()
            yield batch[text_column], batch[label_column] if label_column else None

    return text_column, label_column, batches()


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSONL file, blank lines skipped (as pandas does)."""
    import json

    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise UserError(
                    f"Could not read {path} as JSONL: line {number}: {first_line(error)}"
                ) from None
            if not isinstance(row, dict):
                raise UserError(
                    f"{path} line {number} is not a JSON object; a JSONL file holds one object "
                    'per line, such as {"text": "...", "label": "..."}.'
                )
            yield row


def _jsonl_columns(path: Path) -> list[str]:
    first = next(_jsonl_rows(path), None)
    if first is None:
        raise UserError(f"{path} has no rows.")
    return list(first)


def _jsonl_batches(path: Path, text_column: str, label_column: str | None) -> Batches:
    texts: list[Any] = []
    labels: list[Any] = []
    for row in _jsonl_rows(path):
        texts.append(row.get(text_column))
        labels.append(row.get(label_column) if label_column else None)
        if len(texts) == CHUNK:
            yield texts, labels if label_column else None
            texts, labels = [], []
    if texts:
        yield texts, labels if label_column else None


def _rows(numbers: list[int], where: str) -> str:
    more = f" and {len(numbers) - 5} more" if len(numbers) > 5 else ""
    return f"{where} {', '.join(map(str, numbers[:5]))}{more}"


def _convert(path: Path, kind: str) -> datasets.Dataset:
    """A CSV, TSV or Parquet file as a memory-mapped Arrow table, converted in chunks by
    `datasets`."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    datasets.disable_progress_bars()
    cache = str(scratch() / "datasets")
    try:
        if kind in ("csv", "tsv"):
            # Every column as text, as written: pandas would guess each chunk's types apart.
            import pandas as pd

            sep = "\t" if kind == "tsv" else ","
            first = pd.read_csv(path, **CSV_OPTIONS, sep=sep, nrows=1)
            if first.empty:
                raise UserError(f"{path} has a header but no rows.")
            header = first.columns
            features = datasets.Features({str(c): datasets.Value("string") for c in header})
            dataset = datasets.Dataset.from_csv(
                str(path),
                cache_dir=cache,
                features=features,
                **{k: v for k, v in CSV_OPTIONS.items() if k != "dtype"},  # types: `features`
                sep=sep,
            )
        else:
            dataset = datasets.Dataset.from_parquet(str(path), cache_dir=cache)
    except DatasetGenerationError as error:
        # `datasets` wraps whatever its reader raised; only a parse error is the file's fault.
        cause = error.__cause__
        if not isinstance(cause, READ_ERRORS):
            raise
        raise UserError(f"Could not read {path} as {kind.upper()}: {first_line(cause)}") from None
    except READ_ERRORS as error:  # parse errors: keep their detail, drop the traceback
        raise UserError(f"Could not read {path} as {kind.upper()}: {first_line(error)}") from None
    if len(dataset) == 0:
        raise UserError(f"{path} has a header but no rows.")
    return dataset
