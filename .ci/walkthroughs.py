"""Run every walkthrough in notebooks/ top to bottom, two at a time, each in its own folder:
`python .ci/walkthroughs.py notebooks/ reports/ci-runs/`.

Each walkthrough trains its recipe's quick run (`quick=True`), so their run folders are CI's
quick runs: `make evaluate` reports them and checks them against reports/floors.yaml. The
executed notebook (outputs and plots) is saved beside its run folder. Two kernels share the
two cores with one thread each. Stops with one line per walkthrough that failed or wrote no
run; the network blocker (`make evaluate` sets it) applies to the kernels, which inherit the
environment.
"""

from __future__ import annotations

import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

WORKERS = 2


def execute(path: Path, folder: Path, env: dict[str, str]) -> str:
    """Run one notebook in `folder` (its run folders land there) with its kernel's `env`; the
    outcome as one line."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    folder.mkdir(parents=True)
    notebook = nbformat.read(path, as_version=4)
    start = time.monotonic()
    client = NotebookClient(
        notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    try:
        client.execute(env=env)
    except CellExecutionError as error:
        last = re.sub(r"\x1b\[[0-9;]*m", "", str(error).strip().splitlines()[-1])  # colours
        return f"FAILED {path.name}: {last}"
    finally:
        nbformat.write(notebook, folder / path.name, version=4)
    if not list(folder.glob("runs/*/metrics.json")):
        return f"FAILED {path.name}: the walkthrough wrote no run folder"
    return f"walkthrough {path.stem}: {time.monotonic() - start:.0f} s"


def main(notebooks: Path, output: Path) -> int:
    paths = sorted(notebooks.glob("*.ipynb"), reverse=True)  # the recommender, a long one, first
    if not paths:
        print(f"No notebooks in {notebooks}.")
        return 1
    # One core per kernel; the kernels import the checkout's recipes from any folder.
    defaults = {"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env = {**defaults, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **os.environ}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(notebooks.resolve().parent), os.environ.get("PYTHONPATH")) if p
    )
    folders = [output / p.stem for p in paths]
    with ProcessPoolExecutor(WORKERS) as pool:
        lines = list(pool.map(execute, paths, folders, [env] * len(paths)))
    print("\n".join(lines))
    return 1 if any(line.startswith("FAILED") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
