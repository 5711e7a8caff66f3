"""How many epochs to train, chosen by inner folds of the training rows (train.select_folds).

A validation hold-out of a few dozen rows cannot tell the epochs apart: on a few hundred
photos, 24 held-out images tied the linear probe (epoch 0) with epoch 1 while the validation
loss tripled. With K inner folds, every training row is held out once: each fold trains on
the other K - 1 parts from the same starting point (`start`: LoRA as initialised, the head
from a probe fitted on that fold's training part alone) and records the validation figure
after every epoch, epoch 0 (the starting point) included. The epoch with the best mean over
the folds is chosen, and the model is then trained on every training row with the same
learning-rate schedule, stopped after that many epochs; the last weights are kept. When
epoch 0 wins, nothing is trained and the starting point (the probe head, fitted on every
training row) is the delivered model.

Each fold's held-out probabilities are kept at every candidate epoch, so once the epoch is
chosen every training row has an out-of-fold (OOF) prediction of the model at that epoch
(`FoldSelection.oof_proba`): the run decides its delivered model, calibration and threshold on
them (`OutOfFold`, finetune.evaluation.selection) instead of on a small validation hold-out.

The evaluation rows never enter: the caller hands in training rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from finetune.config import TrainConfig
from finetune.modeling.inputs import Inputs
from finetune.training.checkpoint import Checkpoints
from finetune.training.loop import (
    Rows,
    TrainingLoop,
    TrainResult,
    ValidationFigures,
    _copy_into,
    selection_key,
    trainable_state,
)

# Starts a fold (or the final training) from the same point: the head for these training
# positions (e.g. the linear probe fitted on them); LoRA is reset by the caller.
StartHead = Callable[[Sequence[int]], None]
# Loss weights for the given label ids (None: unweighted).
ClassWeights = Callable[[np.ndarray], np.ndarray | None]


@dataclass
class FoldSelection:
    """Each fold's validation figure per epoch, and the epoch their mean chose."""

    folds: int
    metric: str  # train.select_metric, resolved
    epochs: list[float]  # the candidate epochs, 0 (the starting point) first
    figures: np.ndarray  # folds x epochs: the validation figure (nan where undefined)
    losses: np.ndarray  # folds x epochs: the validation log-loss
    chosen: float
    seconds: float = 0.0
    # epochs x rows x classes: each training row's probabilities from the fold holding it out.
    oof: np.ndarray | None = None
    splits: list[tuple[list[int], list[int]]] | None = None  # (train, held-out) positions

    def oof_proba(self) -> np.ndarray | None:
        """Every training row's out-of-fold probabilities at the chosen epoch."""
        if self.oof is None:
            return None
        return self.oof[self.epochs.index(self.chosen)]

    def means(self) -> list[dict[str, Any]]:
        rows = []
        for column, epoch in enumerate(self.epochs):
            values = self.figures[:, column]
            defined = values[~np.isnan(values)]
            rows.append(
                {
                    "epoch": epoch,
                    "mean": float(defined.mean()) if len(defined) else None,
                    "std": float(defined.std()) if len(defined) else None,
                    "loss_mean": float(self.losses[:, column].mean()),
                }
            )
        return rows

    def fold_choices(self) -> list[float]:
        """The epoch each fold alone would have chosen."""
        return [
            self.epochs[_best(list(self.figures[fold]), list(self.losses[fold]), self.metric)]
            for fold in range(self.folds)
        ]

    def as_dict(self) -> dict[str, Any]:
        """What metrics.json records under `selection`."""
        choices = self.fold_choices()
        return {
            "method": f"{self.folds}-fold inner cross-validation on the training rows",
            "metric": self.metric,
            "chosen_epoch": self.chosen,
            "per_epoch": self.means(),
            "fold_choices": choices,
            # How sure: the share of folds whose own best epoch is the chosen one.
            "agreement": sum(c == self.chosen for c in choices) / self.folds,
            "seconds": round(self.seconds, 1),
        }


def _best(figures: list[float], losses: list[float], metric: str) -> int:
    """The position of the best epoch by `selection_key` (the figure, then the lower loss)."""
    keys = [
        selection_key(
            {f"val_{metric}": None if np.isnan(f) else f, "val_loss": loss},
            metric,
        )
        for f, loss in zip(figures, losses, strict=True)
    ]
    return max(range(len(keys)), key=lambda i: (keys[i], -i))  # ties: the earlier epoch


def choose_epochs(
    model: torch.nn.Module,
    rows: Rows,
    folds: list[tuple[list[int], list[int]]],
    config: TrainConfig,
    inputs: Inputs,
    device: str,
    bf16: bool,
    start: StartHead,
    class_weights: ClassWeights,
    validation_figures: ValidationFigures,
) -> FoldSelection:
    """Train once per fold from the same starting point; choose the epoch by the folds' mean."""
    import time

    began = time.perf_counter()
    initial = trainable_state(model)
    figures, losses, epochs, metric = [], [], [], ""
    per_fold: list[list[np.ndarray]] = []  # per fold: the held-out probabilities per epoch
    for train_part, held_part in folds:
        seen: list[np.ndarray] = []
        per_fold.append(seen)

        def recorded(proba: np.ndarray, labels: np.ndarray, seen=seen) -> dict:
            seen.append(proba)  # one call per epoch, epoch 0 first, rows in held-out order
            return validation_figures(proba, labels)

        _copy_into(model, initial, "The starting point")
        start(train_part)
        loop = TrainingLoop(
            model,
            Rows([rows.ids[i] for i in train_part], rows.labels[train_part]),
            Rows([rows.ids[i] for i in held_part], rows.labels[held_part]),
            config,
            inputs,
            device,
            bf16,
            class_weights=class_weights(rows.labels[train_part]),
            # No checkpoints: a resumed run repeats the folds (seeded) and resumes the final
            # training.
            show_progress=False,
            validation_figures=recorded,
        )
        history = loop.run().history
        metric = loop.select_metric
        epochs = [record["epoch"] for record in history]
        figures.append([_number(record.get(f"val_{metric}")) for record in history])
        losses.append([record["val_loss"] for record in history])
    _copy_into(model, initial, "The starting point")
    figures_array = np.asarray(figures, dtype=float)
    losses_array = np.asarray(losses, dtype=float)
    mean_figures = [
        float(np.nanmean(column)) if not np.isnan(column).all() else np.nan
        for column in figures_array.T
    ]
    chosen = epochs[_best(mean_figures, list(losses_array.mean(axis=0)), metric)]
    return FoldSelection(
        len(folds),
        metric,
        epochs,
        figures_array,
        losses_array,
        chosen,
        time.perf_counter() - began,
        _out_of_fold(per_fold, folds, len(rows.labels), len(epochs)),
        folds,
    )


def _out_of_fold(
    per_fold: list[list[np.ndarray]],
    folds: list[tuple[list[int], list[int]]],
    n_rows: int,
    n_epochs: int,
) -> np.ndarray | None:
    """epochs x rows x classes from each fold's held-out probabilities (None when a fold
    recorded another number of epochs than the others, e.g. a task scoring itself)."""
    if not per_fold or any(len(seen) != n_epochs for seen in per_fold):
        return None
    n_classes = per_fold[0][0].shape[1]
    oof = np.zeros((n_epochs, n_rows, n_classes))
    for seen, (_, held_part) in zip(per_fold, folds, strict=True):
        oof[:, held_part] = np.stack(seen)
    return oof


def _number(value: float | None) -> float:
    return np.nan if value is None else float(value)


def train_chosen(
    model: torch.nn.Module,
    rows: Rows,
    selection: FoldSelection,
    config: TrainConfig,
    inputs: Inputs,
    device: str,
    bf16: bool,
    start: StartHead,
    class_weights: ClassWeights,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> TrainResult:
    """Train on every training row for the chosen number of epochs; keep the last weights.

    The learning-rate schedule is the folds' one (warm-up and linear decay over
    train.epochs), stopped at the chosen epoch, so the model gets what the folds measured."""
    start(list(range(len(rows.labels))))
    if selection.chosen == 0:  # epoch 0 won: the starting point is the delivered model
        model.eval()
        return TrainResult(history=[], best_epoch=0, select_metric=selection.metric)
    no_validation = Rows([], rows.labels[:0])
    loop = TrainingLoop(
        model,
        rows,
        no_validation,
        config,
        inputs,
        device,
        bf16,
        class_weights=class_weights(rows.labels),
        checkpoints=checkpoints,
        show_progress=show_progress,
        validation_figures=None,
    )
    loop.total_steps = max(round(selection.chosen * loop.steps_per_epoch), 1)
    result = loop.run(resume=resume)
    result.best_epoch = selection.chosen
    result.select_metric = selection.metric
    return result
