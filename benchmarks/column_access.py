"""The engine's memory-mapped `Column` against `datasets.Dataset` doing the same reads.

    python benchmarks/column_access.py                # 200,000 rows, 20,000 random reads
    python benchmarks/column_access.py --rows 20000   # smaller

With `data.memory_map` the engine reads texts one row at a time (batching by length picks
rows all over the file) and takes row subsets (train / validation / folds) as views. Both
can be done with `datasets.Dataset` itself (`ds[i]["text"]`, `ds.select(rows)`); this measures
whether the thin `Column` wrapper (finetune/data/columns.py, direct reads of the Arrow column)
is worth keeping. Same file, same process, same row order on both sides; the ratio is
Dataset time / Column time (above 1: `Column` is faster).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=20_000)
    args = parser.parse_args()

    from finetune.data.columns import Column, open_mapped

    folder = Path(tempfile.mkdtemp(prefix="column-bench-"))
    path = folder / "texts.arrow"
    schema = pa.schema([("text", pa.string())])
    texts = [f"message {i}: my card payment was declined, please refund" for i in range(args.rows)]
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array(texts)], schema=schema))
    dataset = open_mapped(path)
    column = Column(dataset, "text")
    rng = np.random.default_rng(0)
    reads = [int(i) for i in rng.integers(0, args.rows, args.reads)]
    subset = rng.permutation(args.rows)[: args.rows // 2]
    in_view = [i % len(subset) for i in reads]

    column_view, dataset_view = column.take(subset), dataset.select(subset)
    assert [column_view[i] for i in in_view[:100]] == [
        dataset_view[i]["text"] for i in in_view[:100]
    ]
    pairs = {
        "random reads": (
            lambda: [column[i] for i in reads],
            lambda: [dataset[i]["text"] for i in reads],
        ),
        "view of half the rows": (lambda: column.take(subset), lambda: dataset.select(subset)),
        "random reads from the view": (
            lambda: [column_view[i] for i in in_view],
            lambda: [dataset_view[i]["text"] for i in in_view],
        ),
    }
    results = []
    for name, (with_column, with_dataset) in pairs.items():
        column_s, dataset_s = _timed(with_column), _timed(with_dataset)
        results.append(
            {
                "operation": name,
                "column_ms": round(column_s * 1000, 1),
                "dataset_ms": round(dataset_s * 1000, 1),
                "ratio": round(dataset_s / max(column_s, 1e-9), 1),
            }
        )
    print(json.dumps({"rows": args.rows, "reads": args.reads, "results": results}, indent=1))


if __name__ == "__main__":
    main()
