"""Reading labelled tables, checking them, and splitting them: the engine's only data entry point.

Every check raises `UserError` naming the file, the column or the rows at fault and what to do,
so a user never has to read a pandas or tokenizer traceback to find a typo in a header.
"""

from __future__ import annotations

import csv
import difflib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.data.columns import take
from finetune.errors import UserError, first_line

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
# Every CSV cell as the text written in it; only an empty cell is missing ("NA" is a label).
# `index_col=False`: pandas would otherwise take the first field as an index when the first row
# has more fields than the header (check_fields refuses such rows before pandas reads them).
CSV_OPTIONS = {
    "dtype": str,
    "keep_default_na": False,
    "na_values": [""],
    "encoding": "utf-8-sig",
    "index_col": False,
}
# What the table readers raise on a malformed file: pandas' ParserError, json and Unicode errors
# and pyarrow's ArrowInvalid are ValueErrors, pyarrow's IO errors OSErrors. Anything else (a
# MemoryError, a bug) is not the file's fault and keeps its traceback.
READ_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, csv.Error)
# Cell values that are not one text or number: JSON objects and lists, Parquet list columns.
NESTED = (dict, list, tuple, set)


@dataclass
class Examples:
    """Texts with their (string) labels; `source` says where they came from, for reports.

    `features` is optional side data, one row per example (the raw table columns of a tabular
    record, the user and item ids of an interaction): the model reads `texts`, and the
    table's columns too with model.side_features (finetune.modeling.features); recipe
    baselines and recipe metrics may read `features`.
    For image recipes, `texts` holds the paths of the image files. `skipped` names inputs the
    reader left out (e.g. unreadable images); the run report lists them.
    `groups` (optional, one per example: a patient, a site) keeps a group's rows on one side
    of every split the engine makes (finetune.splits); never a model input.
    """

    texts: Sequence[str]  # a list, or a `columns.Column` with data.memory_map
    labels: Sequence[str]
    source: str
    features: pd.DataFrame | None = None
    skipped: list[str] = field(default_factory=list)
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int], source: str) -> Examples:
        features = None
        if self.features is not None:
            features = self.features.iloc[list(indices)].reset_index(drop=True)
        groups = None if self.groups is None else [self.groups[i] for i in indices]
        return Examples(
            take(self.texts, indices),
            take(self.labels, indices),
            source,
            features,
            self.skipped,
            groups,
        )


def check_file(path: str | Path) -> str:
    """The checks every reader makes before parsing: the file's kind (csv, tsv, jsonl, parquet).

    Text files are read a block at a time, so checking a file larger than memory is fine."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"Data file not found: {path}. Check the path (relative to {Path.cwd()}).")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a CSV, JSONL or Parquet file.")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        spreadsheet = f" {RESAVE}" if path.suffix.lower() in (".xlsx", ".xls", ".xlsm") else ""
        raise UserError(
            f"{path}: unsupported file type '{path.suffix}'. Use .csv, .tsv, .jsonl or "
            f".parquet.{spreadsheet}"
        )
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty.")
    if kind == "parquet":
        return kind
    with path.open("rb") as handle:
        head = handle.read(8192)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise UserError(f'{path} is UTF-16 text (Excel\'s "Unicode Text"), not UTF-8. {RESAVE}')
        if b"\x00" in head:
            raise UserError(f"{path} looks binary, not {kind.upper()} text.")
        handle.seek(0)
        offset, pending = 0, b""
        while block := handle.read(1 << 20):
            data = pending + block
            try:
                data.decode("utf-8")
                pending = b""
            except UnicodeDecodeError as error:
                if error.reason == "unexpected end of data" and error.start >= len(data) - 3:
                    pending = data[error.start :]  # a character cut by the block boundary
                else:
                    raise UserError(
                        f"{path} is not UTF-8 text (byte {data[error.start]:#04x} at offset "
                        f"{offset - len(pending) + error.start}){_reads_as(data)}. {RESAVE}"
                    ) from None
            offset += len(block)
        if pending:
            raise UserError(
                f"{path} is not UTF-8 text (it ends inside a character, offset "
                f"{offset - len(pending)}). {RESAVE}"
            )
    if kind in ("csv", "tsv"):
        check_fields(path, kind)
    return kind


RESAVE = 'Save it as UTF-8 (in Excel: Save As, "CSV UTF-8").'
# Encodings a spreadsheet saves text in, with how to name them: GB18030 (which reads GBK and
# GB2312) first, as it refuses most Western text, which Windows-1252 would read.
OTHER_ENCODINGS = {
    "gb18030": "GB18030/GBK (Chinese Windows)",
    "cp1252": "Windows-1252 (Western Windows)",
}


def _reads_as(data: bytes) -> str:
    """ "; it reads as ..." for the first encoding in OTHER_ENCODINGS that decodes `data`
    (a block of the file; a character cut at its end is allowed), else ""."""
    import codecs

    for encoding, name in OTHER_ENCODINGS.items():
        try:
            codecs.getincrementaldecoder(encoding)().decode(data, final=False)
        except UnicodeDecodeError:
            continue
        return f"; it reads as {name}"
    return ""


def check_fields(path: Path, kind: str) -> None:
    """Refuse a CSV/TSV row with more or fewer fields than the header, naming its line.

    pandas would take extra fields as an index or drop them, and fill missing ones with empty
    cells: a text holding an unquoted separator or line break would be cut without a word. A
    short row is refused too rather than read: it is most often one half of a text split by an
    unquoted line break, whose other half then reads as a row of its own."""
    separator = "\t" if kind == "tsv" else ","
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # the default (128 KiB) would refuse long texts
    header: list[str] | None = None
    bad: list[tuple[int, int]] = []  # (line, fields) of the rows at fault
    count, start = 0, 1
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=separator)
            for fields in reader:
                line, start = start, reader.line_num + 1  # a quoted text may span lines
                if not fields:
                    continue  # a blank line: pandas skips it too
                if header is None:
                    header = fields
                    _check_header(path, header)
                elif len(fields) != len(header):
                    count += 1
                    if len(bad) < 5:
                        bad.append((line, len(fields)))
    except csv.Error as error:
        raise UserError(
            f"Could not read {path} as {kind.upper()}: line {start}: {first_line(error)}"
        ) from None
    finally:
        csv.field_size_limit(limit)
    if bad and header is not None:
        raise UserError(_field_count_message(path, kind, header, bad, count))


def _check_header(path: Path, header: list[str]) -> None:
    """Refuse a header naming a column twice: pandas would read the second as 'name.1' and
    every command would use the first without a word. Unnamed columns (a spreadsheet's
    trailing commas) may repeat."""
    twice = sorted({name for name in header if name and header.count(name) > 1})
    if twice:
        named = ", ".join(f"'{name}'" for name in twice)
        raise UserError(f"{path}: the header names {named} more than once; rename the copies.")


def _field_count_message(
    path: Path, kind: str, header: list[str], bad: list[tuple[int, int]], count: int
) -> str:
    line, fields = bad[0]
    others = [str(other) for other, _ in bad[1:]]
    if count > len(bad):
        others.append(f"{count - len(bad)} more")
    also = f" (also lines {', '.join(others)})" if others else ""
    what = "tab" if kind == "tsv" else "comma"
    plural = "field" if fields == 1 else "fields"
    message = f"{path} line {line}: {fields} {plural} where the header has {len(header)}{also}"
    if fields > len(header):
        message += f" (a text with an unquoted {what}?). Quote texts that hold the separator."
    else:
        message += (
            " (a text with an unquoted line break, or missing separators?). Quote texts that "
            "hold line breaks; give every row one field per column, empty ones too."
        )
    if kind == "csv" and len(header) == 1 and ("\t" in header[0] or ";" in header[0]):
        message += " (The header has one column: is the file separated by tabs or semicolons?)"
    return message


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV, JSONL or Parquet file, with errors that say what is wrong with it."""
    import pandas as pd

    path = Path(path)
    kind = check_file(path)
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        elif kind == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8")
        else:
            frame = pd.read_csv(path, **CSV_OPTIONS, sep="\t" if kind == "tsv" else ",")
    except READ_ERRORS as error:  # parse errors: keep their detail, drop the traceback
        raise UserError(f"Could not read {path} as {kind.upper()}: {first_line(error)}") from None
    if frame.empty:
        raise UserError(f"{path} has a header but no rows.")
    return frame


def find_column(frame: pd.DataFrame | list[str], name: str, role: str, source: str) -> str:
    """`name` if the table has that column, else an error naming the closest header."""
    columns = [str(c) for c in (frame if isinstance(frame, list) else frame.columns)]
    if name in columns:
        return name
    close = difflib.get_close_matches(name, columns, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    flag = "--text-column" if role == "text" else "--label-column"
    message = (
        f"{source}: no {role} column '{name}'.{hint} Columns found: {', '.join(columns)}. "
        f"Pass {flag} NAME."
    )
    if len(columns) == 1 and ("\t" in columns[0] or ";" in columns[0]):
        message += " (Only one column was found: is the file separated by tabs or semicolons?)"
    raise UserError(message)


def _row_numbers(mask: pd.Series | np.ndarray, path_kind: str) -> str:
    """The first rows where `mask` holds, as the file's line (CSV/TSV) or row numbers.

    By position, not by index label: a table's index may be anything (a Parquet file's saved
    index, text), while the n-th row read is the file's n-th row."""
    import numpy as np

    # Header is line 1 in CSV/TSV, so data row i sits on line i + 2.
    offset = 2 if path_kind in ("csv", "tsv") else 1
    positions = np.flatnonzero(np.asarray(mask, dtype=bool))
    rows = [int(i) + offset for i in positions[:5]]
    more = f" and {len(positions) - 5} more" if len(positions) > 5 else ""
    where = "lines" if path_kind in ("csv", "tsv") else "rows"
    return f"{where} {', '.join(map(str, rows))}{more}"


def examples_from_frame(
    frame: pd.DataFrame, text_column: str, label_column: str | None, source: str
) -> Examples:
    """Pull texts (and labels, when `label_column` is given) out of a table, checking both."""
    kind = READERS.get(Path(source).suffix.lower(), "rows")
    text_column = find_column(frame, text_column, "text", source)
    texts = frame[text_column]
    check_scalars(texts, text_column, source, kind)
    empty = texts.isna() | (texts.astype(str).str.strip() == "")
    if empty.any():
        raise UserError(
            f"{source}: empty text in column '{text_column}' at {_row_numbers(empty, kind)}. "
            "Remove or fill those rows."
        )
    labels: list[str] = []
    if label_column is not None:
        label_column = find_column(frame, label_column, "label", source)
        labels = label_strings(frame[label_column], label_column, source, kind)
    return Examples([str(t) for t in texts], labels, source)


def label_strings(raw: pd.Series, column: str, source: str, kind: str) -> list[str]:
    """A label column as strings, refusing empty cells (named by line or row)."""
    check_scalars(raw, column, source, kind)
    missing = raw.isna() | (raw.astype(str).str.strip() == "")
    if missing.any():
        raise UserError(
            f"{source}: missing label in column '{column}' at "
            f"{_row_numbers(missing, kind)}. Label or remove those rows."
        )
    return [_label_string(value) for value in raw]


def check_scalars(values: Sequence[object], column: str, source: str, kind: str) -> None:
    """Refuse cells holding a JSON object or list (or a Parquet list) instead of one value.

    Read as text, `{"a": 1}` would become a label or a text of its own without a word.
    `kind` is the file's kind (csv, jsonl, ...), for line or row numbers."""
    import numpy as np

    nested = np.array([isinstance(value, (*NESTED, np.ndarray)) for value in values], dtype=bool)
    if nested.any():
        raise nested_error(source, column, _row_numbers(nested, kind))


def nested_error(source: str, column: str, rows: str) -> UserError:
    """The one message for cells that hold a structure (`rows`: "lines 3, 7" or "rows 2")."""
    return UserError(
        f"{source}: column '{column}' holds a JSON object or list instead of a single value at "
        f"{rows}. Give one text or value per cell: flatten those fields or pick one part of them."
    )


def _label_string(value: object) -> str:
    # 1.0 read from JSON/Parquet and "1" read from CSV must be the same class.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def load_examples(path: str | Path, text_column: str, label_column: str | None) -> Examples:
    return examples_from_frame(read_table(path), text_column, label_column, str(path))


def check_train_eval(train: Examples, evaluation: Examples) -> None:
    """The label checks a fine-tune needs: two classes at least, nothing unseen in evaluation."""
    counts = Counter(train.labels)
    if len(counts) < 2:
        only = next(iter(counts), "none")
        raise UserError(
            f"{train.source}: found one class only ('{only}'); a classifier needs at least two."
        )
    unseen = sorted(set(evaluation.labels) - set(counts))
    if unseen:
        shown = ", ".join(repr(label) for label in unseen[:10])
        raise UserError(
            f"{evaluation.source}: labels not present in the training data: {shown}"
            f"{' …' if len(unseen) > 10 else ''}. "
            "Add training examples for them or drop those rows."
        )


def stratified_split(examples: Examples, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (kept, held_out), stratified by label and seeded.

    Every class keeps at least one example on the kept side; classes with a single example
    stay there entirely, since a one-example class cannot be split.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(examples.labels):
        by_label.setdefault(label, []).append(index)
    kept: list[int] = []
    held: list[int] = []
    for label in sorted(by_label):
        indices = np.array(by_label[label])
        rng.shuffle(indices)
        n_held = int(round(len(indices) * fraction))
        n_held = min(n_held, len(indices) - 1) if len(indices) > 1 else 0
        if fraction > 0 and n_held == 0 and len(indices) >= 3:
            n_held = 1
        held.extend(indices[:n_held].tolist())
        kept.extend(indices[n_held:].tolist())
    return sorted(kept), sorted(held)


def shared_texts(train: Sequence[str], evaluation: Sequence[str], shown: int = 3) -> dict | None:
    """Evaluation texts that also occur in the training texts, once case and spacing are
    normalised: templated or duplicated tickets make the evaluation figures look better than
    they will be on new messages. None when there are none.

    Training texts are kept as 64-bit hashes, so a memory-mapped table stays off the heap.
    """
    from hashlib import blake2b

    def key(text: str) -> bytes:
        return blake2b(" ".join(str(text).casefold().split()).encode(), digest_size=8).digest()

    seen = {key(text) for text in train}
    hits = [text for text in evaluation if key(text) in seen]
    if not hits:
        return None
    return {
        "count": len(hits),
        "share": round(len(hits) / len(evaluation), 4),
        "examples": list(dict.fromkeys(hits))[:shown],
    }
