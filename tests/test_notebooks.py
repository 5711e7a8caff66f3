"""Every walkthrough in notebooks/ runs top to bottom, offline (sockets blocked), on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# The network blocker `make evaluate` uses (loopback, which the kernel talks over, stays open).
BLOCKER = ROOT / ".ci" / "no_network"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name} is committed with outputs; clear them"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join([str(BLOCKER), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    network_log = tmp_path / "network.log"
    monkeypatch.setenv("FINETUNE_NETWORK_LOG", str(network_log))
    # Run in a scratch folder so run folders land there, not in the repository.
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    assert list((tmp_path / "runs").glob("*/metrics.json")), "the walkthrough wrote no run"
    assert not network_log.exists(), network_log.read_text()
