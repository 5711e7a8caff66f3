"""The wheel users install (not the editable checkout) carries every file the recipes read:
the data cards and the bundled data. CI also installs it into a fresh venv and runs a recipe
(.ci/run); this test catches a file left out of the package in seconds."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_wheel_ships_the_data_cards_and_the_files_they_name(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 69:
        pytest.skip("building the wheel offline needs setuptools >= 69 (pyproject.toml)")
    import yaml

    # Built from a copy: an in-tree build would leave build/ in the checkout, and setuptools
    # packages whatever an earlier build left there.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("finetune", "recipes"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "."]
        + ["-w", str(tmp_path / "dist")],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    from finetune.data.cards import CARDS_DIR

    cards = sorted(CARDS_DIR.glob("*.md"))
    assert {"pima", "biopsy", "shop_intents"} <= {card.stem for card in cards}
    for card in cards:  # where the code looks for it, relative to site-packages
        assert card.relative_to(ROOT).as_posix() in names, card.name
        header = yaml.safe_load(card.read_text(encoding="utf-8").split("\n---\n")[0][4:])
        for relative in (header.get("files") or {}).values():  # relative to site-packages
            assert relative in names, (card.name, relative)
    from finetune.evaluation.metrics import evaluate_module_path

    metric_module = Path(evaluate_module_path()) / "finetune_classification.py"
    assert metric_module.relative_to(ROOT).as_posix() in names
