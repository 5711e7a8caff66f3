"""Resumable training: the loop's whole state in one file, replaced atomically.

Only the LoRA weights and the head train, so a checkpoint is small (those tensors, their
optimizer moments, the best epoch's copy) and cheap to write every few dozen steps. It lives
beside the run folder (`<output>.checkpoint/`) until the run folder is complete, so a killed
run never leaves anything that looks finished, and `train --resume` picks up where it stopped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch


def checkpoint_folder(run_folder: Path) -> Path:
    return run_folder.with_name(run_folder.name + ".checkpoint")


class Checkpoints:
    """Save and load the training loop's state for one run folder."""

    def __init__(self, run_folder: Path, enabled: bool = True):
        self.folder = checkpoint_folder(run_folder)
        self.path = self.folder / "state.pt"
        self.enabled = enabled

    def save(self, state: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"state.pt.tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # a kill mid-write leaves the previous checkpoint intact

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        # Our own file of tensors and plain values: no arbitrary pickles are needed to read it.
        return torch.load(self.path, weights_only=True)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
