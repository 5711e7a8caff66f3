"""A column of a memory-mapped Arrow file that the engine reads as if it were a list.

With `data.memory_map`, texts, labels and token ids stay on disk (memmap.py writes them);
`Column` is what the engine sees instead of a list: indexing, `take` (a view on some rows, no
copy), `len`, iteration in chunks, and token counts computed in Arrow. `take` and `to_list`
treat a `Column` and a plain list alike, so the code that splits and batches examples works on
either.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import datasets

CHUNK = 4096  # rows per Arrow read or write: bounds the memory a pass over a column takes


class Column(Sequence):
    """One column of a memory-mapped `datasets.Dataset`, optionally restricted to some rows."""

    def __init__(self, dataset: datasets.Dataset, name: str, rows: np.ndarray | None = None):
        self.dataset = dataset
        self.name = name
        self.array = dataset.data.column(name)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.array) if self.rows is None else len(self.rows)

    def _row(self, i: int) -> int:
        return int(i) if self.rows is None else int(self.rows[i])

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])
        if isinstance(key, int | np.integer):
            if key < 0:
                key += len(self)
            return self.array[self._row(key)].as_py()
        raise TypeError(f"Column indices must be integers or slices, not {type(key).__name__}")

    def take(self, indices: Sequence[int] | np.ndarray) -> Column:
        """A view on the given positions (of this view), in that order."""
        positions = np.asarray(indices, dtype=np.int64)
        rows = positions if self.rows is None else self.rows[positions]
        return Column(self.dataset, self.name, rows)

    def chunks(self) -> Iterator[list[Any]]:
        for start in range(0, len(self), CHUNK):
            stop = min(start + CHUNK, len(self))
            if self.rows is None:
                yield self.array.slice(start, stop - start).to_pylist()
            else:
                yield self.array.take(self.rows[start:stop]).to_pylist()

    def __iter__(self) -> Iterator[Any]:
        for chunk in self.chunks():
            yield from chunk

    def list_lengths(self) -> np.ndarray:
        """Element counts of a list column (token ids), without turning rows into Python."""
        import pyarrow.compute as pc

        lengths = pc.list_value_length(self.array).to_numpy(zero_copy_only=False)
        return lengths if self.rows is None else lengths[self.rows]

    def transform(self, function: Callable[[list[Any]], list[Any]], value_type: Any) -> Column:
        """A new memory-mapped column: `function` applied to this one a chunk at a time."""
        import pyarrow as pa

        path = scratch() / f"{uuid.uuid4().hex}.arrow"
        schema = pa.schema([(self.name, value_type)])
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for chunk in self.chunks():
                writer.write_batch(
                    pa.record_batch([pa.array(function(chunk), type=value_type)], schema=schema)
                )
        return Column(open_mapped(path), self.name)


def take(items: Sequence[Any], indices: Sequence[int] | np.ndarray) -> Sequence[Any]:
    """`items` at `indices`: a view for a `Column`, a list otherwise."""
    if isinstance(items, Column):
        return items.take(indices)
    return [items[i] for i in indices]


def to_list(items: Sequence[Any]) -> list[Any]:
    return items if isinstance(items, list) else list(items)


_SCRATCH: Path | None = None


def scratch() -> Path:
    """This process's folder for Arrow files, removed at exit. It sits in $TMPDIR, which needs
    room for about twice the training file."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = Path(tempfile.mkdtemp(prefix="finetune-arrow-"))
        atexit.register(shutil.rmtree, _SCRATCH, True)
    return _SCRATCH


def open_mapped(path: Path) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_file(str(path), in_memory=False)
