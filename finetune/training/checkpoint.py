"""Resumable training: the loop's whole state in one file, replaced atomically.

Only the LoRA weights and the head train, so a checkpoint is small (those tensors, their
optimizer moments, the best epoch's copy) and cheap to write every few dozen steps. It lives
beside the run folder (`<output>.checkpoint/`) until the run folder is complete, so a killed
run never leaves anything that looks finished, and `train --resume` picks up where it stopped.
`LoopState` is that state (loop.TrainingLoop keeps it up to date and fills in its tensors
to save); `Checkpoints` writes it with the run's settings and reads it back.

A resumed run must continue the run that was killed, not a different one: the checkpoint
records a fingerprint of every setting that shapes the training trajectory (model, data
files, data options, training options, device and process count) and every random number
generator the loop draws from, and a resume with other settings, or with tensors that do not
fit the model, is refused with the differing names. A `train` without `--resume` never
deletes a checkpoint silently: it stops unless `--overwrite` says to start afresh.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from finetune.errors import UserError

if TYPE_CHECKING:
    from finetune.config import Config

# Settings that cannot change what training computes: where the run is written, how it was
# started, how often it checkpoints, and what is reported after training.
NOT_FINGERPRINTED = (
    "output",
    "overwrite",
    "resume",
    "train.checkpoint_steps",
    "eval.target_recall",
)
SHOWN = 5  # differing names listed in an error before "..."


def checkpoint_folder(run_folder: Path) -> Path:
    return run_folder.with_name(run_folder.name + ".checkpoint")


def fingerprint(config: Config, device: str) -> dict[str, Any]:
    """Every setting of `config` that shapes the training trajectory, as dotted key -> value.

    Values naming a file or folder are resolved to an absolute path (with a file's size), so
    a resume from another working directory, or after the data file changed size, shows."""
    flat = _flatten(config.to_dict())
    for key in NOT_FINGERPRINTED:
        flat.pop(key, None)
    for key, value in flat.items():
        if isinstance(value, str) and value and Path(value).exists():
            path = Path(value).resolve()
            flat[key] = f"{path} ({path.stat().st_size} bytes)" if path.is_file() else str(path)
    # Data parallel: the batches each process sees depend on how many there are.
    flat["device"], flat["processes"] = device, int(os.environ.get("WORLD_SIZE", "1"))
    return flat


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _listed(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" ... ({len(names)} in all)" if len(names) > SHOWN else "")


def check_same_settings(saved: dict[str, Any] | None, now: dict[str, Any], path: Path) -> None:
    """Refuse to resume the checkpoint at `path` under settings other than its own."""
    fresh = "or pass --overwrite without --resume to start afresh"
    if saved is None:
        raise UserError(
            f"{path} records no settings (written by an older version), so resuming it could "
            f"silently continue a different run; {fresh}."
        )
    differing = sorted(key for key in saved.keys() | now.keys() if saved.get(key) != now.get(key))
    if differing:
        changes = [f"{key} {saved.get(key)!r} there, {now.get(key)!r} now" for key in differing]
        raise UserError(
            f"{path} was written by a run with other settings ({_listed(changes)}); resume with "
            f"the settings it was written with, {fresh}."
        )


def check_tensors(
    expected: dict[str, torch.Size], state: dict[str, torch.Tensor], source: str
) -> None:
    """Refuse a state whose tensor names or shapes differ from the model's trainable ones."""
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    problems = []
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unexpected:
        problems.append(f"not in the model: {_listed(unexpected)}")
    wrong = [
        f"{name} {tuple(state[name].shape)} there, {tuple(shape)} in the model"
        for name, shape in expected.items()
        if name in state and state[name].shape != shape
    ]
    if wrong:
        problems.append(f"other shapes: {_listed(wrong)}")
    if problems:
        raise UserError(
            f"{source} does not fit this model's trainable tensors ({'; '.join(problems)}); "
            "resume with the model and settings it was written with, or pass --overwrite "
            "without --resume to start afresh."
        )


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random number generator a run may draw from: Python's, numpy's global one,
    torch's CPU one, the current CUDA device's (when CUDA is in use) and `generators`."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        # As a tensor: the checkpoint is loaded with weights_only, which takes no numpy arrays.
        "numpy_key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
        "numpy_rest": [numpy_state["state"]["pos"], numpy_state["has_gauss"], numpy_state["gauss"]],
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # The current device only: each data-parallel process draws on its own device.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put every generator back where `rng_state` found it."""
    random.setstate(state["python"])
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": state["numpy_key"].numpy().astype(np.uint32), "pos": pos},
            "has_gauss": has_gauss,
            "gauss": gauss,
        }
    )
    torch.set_rng_state(state["torch"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@dataclass
class LoopState:
    """Everything the training loop needs to continue exactly where it stopped.

    The counters and records are the loop's own, updated as it runs; the tensors (trainable
    weights, optimizer moments, schedule, generators) are filled in when the loop takes a
    snapshot to save. `to_dict` is the checkpoint file's layout: tensors and plain values
    only, so it loads with `torch.load(weights_only=True)`."""

    step: int = 0
    epoch: int = 0
    # Batches of `epoch` already trained (a resume skips them); 0 at an epoch boundary.
    batch_in_epoch: int = 0
    seen: int = 0  # training rows stepped over, for samples/s
    tokens: int = 0  # their tokens, for tokens/s (0 when the inputs have no token lengths)
    elapsed: float = 0.0  # training seconds before the current stretch of the clock
    running: list[float] = field(default_factory=list)  # per-step losses still needed
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    best_epoch: float | None = None
    best_key: tuple[float, ...] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    trainable: dict[str, torch.Tensor] | None = None
    ema: dict[str, torch.Tensor] | None = None  # the weights' moving average (train.ema_decay)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        # asdict would deep-copy every tensor; a shallow dict of the fields is what is saved.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> LoopState:
        """The state a checkpoint file holds (its other keys, such as the settings, ignored)."""
        names = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in saved.items() if k in names})
        state.running = list(state.running)
        if state.best_key is not None:  # saved as a list or tuple; compared as a tuple
            state.best_key = tuple(state.best_key)
        return state


class Checkpoints:
    """Save and load the training loop's state for one run folder.

    `settings` (a `fingerprint`) is saved with every state, for `open_checkpoints` to compare
    on resume."""

    def __init__(
        self, run_folder: Path, enabled: bool = True, settings: dict[str, Any] | None = None
    ):
        self.folder = checkpoint_folder(run_folder)
        self.path = self.folder / "state.pt"
        self.enabled = enabled
        self.settings = settings

    def save(self, state: LoopState) -> None:
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"state.pt.tmp-{os.getpid()}")
        torch.save({**state.to_dict(), "settings": self.settings}, tmp)
        os.replace(tmp, self.path)  # a kill mid-write leaves the previous checkpoint intact

    def read(self) -> dict[str, Any] | None:
        """The file as saved: the state's fields and the settings it was written under."""
        if not self.path.is_file():
            return None
        # Our own file of tensors and plain values: no arbitrary pickles are needed to read it.
        return torch.load(self.path, weights_only=True)

    def load(self) -> LoopState | None:
        saved = self.read()
        return None if saved is None else LoopState.from_dict(saved)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def open_checkpoints(folder: Path, config: Config, device: str, main: bool) -> Checkpoints:
    """The checkpoints of the run writing `folder`, after the rules for an existing one:
    `--resume` continues it if its settings are this run's; otherwise it is kept (and the run
    stops) unless `--overwrite` says to start afresh. Only the main process deletes."""
    checkpoints = Checkpoints(folder, settings=fingerprint(config, device))
    if config.resume:
        if config.output is None:
            raise UserError("--resume needs the --output folder of the run to continue.")
        state = checkpoints.read()
        if state is None:
            print(f"No checkpoint in {checkpoints.folder}; starting from the beginning.")
        else:
            check_same_settings(state.get("settings"), checkpoints.settings, checkpoints.path)
            print(f"Resuming from the checkpoint at step {state['step']}.")
    elif checkpoints.path.is_file() and not config.overwrite:
        raise UserError(
            f"{checkpoints.folder} holds the checkpoint of an unfinished run: pass --resume to "
            "continue or --overwrite to start afresh."
        )
    elif main:
        checkpoints.clear()  # --overwrite, or a folder a kill left without a complete state
    return checkpoints
