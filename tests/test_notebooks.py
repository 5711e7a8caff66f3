"""The walkthroughs in notebooks/ and the runner that executes them in `make evaluate` (CI),
where each trains its recipe's quick run with the network blocked (tests/test_offline.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def code(path: Path) -> str:
    notebook = nbformat.read(path, as_version=4)
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_walkthrough_is_committed_clean_and_trains_the_quick_run(path: Path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name} is committed with outputs; clear them"
    )
    # CI checks each walkthrough's run against the quick run's floors (reports/floors.yaml).
    assert "quick=True" in code(path), f"{path.name} must train with quick=True"


def test_every_recipe_has_a_walkthrough():
    from finetune.registry import recipe_entries

    texts = {path: code(path) for path in NOTEBOOKS}
    for target in recipe_entries().values():
        module = target.split(":")[0]
        assert any(f"from {module} import recipe" in text for text in texts.values()), module


def runner():
    spec = importlib.util.spec_from_file_location("walkthroughs", ROOT / ".ci" / "walkthroughs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def stand_in(folder: Path, name: str, source: str) -> None:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(notebook, folder / f"{name}.ipynb")


def test_the_runner_executes_every_walkthrough_and_names_each_failure(tmp_path, capsys):
    notebooks, output = tmp_path / "notebooks", tmp_path / "out"
    notebooks.mkdir()
    writes = "from pathlib import Path\nPath('runs/quick').mkdir(parents=True)\n"
    stand_in(notebooks, "good", writes + "Path('runs/quick/metrics.json').write_text('{}')")
    stand_in(notebooks, "broken", "raise ValueError('no such column: glu')")
    stand_in(notebooks, "idle", writes)
    assert runner().main(notebooks, output) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "FAILED idle.ipynb: the walkthrough wrote no run folder"
    assert lines[1].startswith("walkthrough good: ")
    assert lines[2].startswith("FAILED broken.ipynb: ") and "no such column: glu" in lines[2]
    assert (output / "good" / "runs" / "quick" / "metrics.json").is_file()
    executed = nbformat.read(output / "broken" / "broken.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["ename"] == "ValueError"  # saved with its outputs
