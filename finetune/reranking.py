"""Training a cross-encoder reranker: what a recipe calls for the ranking task's cross-encoding.

A recipe hands in groups (`Group`: one query, its candidates, the positive's position, optional
offsets) for training and for validation; `fit_cross_encoder` builds the LoRA (or QLoRA)
cross-encoder (modeling/cross_encoder.py), trains it with the shared loop (training/loop.py)
and keeps the epoch with the best validation ranking figure (epoch 0, the untrained scorer,
included), measured by the engine's ranking metrics (evaluation/ranking.py). `rerank` scores
new (query, candidates) lists; `save_cross_encoder` / `load_cross_encoder` write and read the
model folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from finetune.errors import UserError
from finetune.evaluation.ranking import full_catalogue
from finetune.modeling.cross_encoder import (
    LOSSES,
    CrossEncoder,
    CrossEncoderTask,
    GroupInputs,
    GroupMeasure,
    encode_groups,
)
from finetune.modeling.cross_encoder import Group as Group
from finetune.modeling.cross_encoder import load_cross_encoder as load_cross_encoder
from finetune.modeling.cross_encoder import rerank as rerank
from finetune.modeling.cross_encoder import save_cross_encoder as save_cross_encoder

if TYPE_CHECKING:
    from finetune.config import Config
    from finetune.training.loop import TrainResult


def group_measure(k: int = 10) -> GroupMeasure:
    """Scores a cross-encoder's validation groups: NDCG@k, Recall@k and MRR of each group's
    positive among its own candidates (full_catalogue on the groups as rows, a shorter
    group's padded places excluded), and `val_loss`, the mean listwise softmax loss."""

    def measure(scores: list[np.ndarray], positives: np.ndarray) -> dict[str, float]:
        if not scores:
            return {"val_loss": 0.0, f"val_ndcg@{k}": 0.0, f"val_recall@{k}": 0.0, "val_mrr": 0.0}
        width = max(len(s) for s in scores)
        matrix = np.zeros((len(scores), width))
        for row, group in enumerate(scores):
            matrix[row, : len(group)] = group
        relevant = [np.array([p]) for p in positives]
        exclude = [np.arange(len(group), width) for group in scores]
        out = full_catalogue(matrix, relevant, exclude, k)
        losses = [
            np.logaddexp.reduce(group.astype(np.float64)) - group[p]
            for group, p in zip(scores, positives, strict=True)
        ]
        return {
            "val_loss": float(np.mean(losses)),
            f"val_ndcg@{k}": float(out.ndcg.mean()),
            f"val_recall@{k}": float(out.recall.mean()),
            "val_mrr": float(out.reciprocal_rank.mean()),
        }

    return measure


def check_groups(groups: Sequence[Group], name: str) -> None:
    """One clear line for a group the task cannot train or score on."""
    for number, group in enumerate(groups):
        n = len(group.candidates)
        if n < 2:
            raise UserError(
                f"{name} group {number}: {n} candidate(s); give a positive and at "
                "least one negative."
            )
        if not 0 <= group.positive < n:
            raise UserError(
                f"{name} group {number}: positive {group.positive} is not one of its "
                f"{n} candidates (positions 0 to {n - 1})."
            )
        if group.offsets is not None and len(group.offsets) != n:
            raise UserError(
                f"{name} group {number}: {len(group.offsets)} offsets for {n} "
                "candidates; give one per candidate (0 where there is none)."
            )


class FittedCrossEncoder(NamedTuple):
    model: CrossEncoder
    tokenizer: Any
    result: TrainResult
    validation_scores: list[np.ndarray]  # the kept epoch's, one array per validation group


def fit_cross_encoder(
    groups: Sequence[Group],
    validation_groups: Sequence[Group],
    config: Config,
    loss: str = "listwise",
    k: int = 10,
    select_metric: str | None = None,
    show_progress: bool = False,
) -> FittedCrossEncoder:
    """Train a cross-encoder on `groups` (config.model: backbone, LoRA, quant; config.train:
    the loop; config.data.max_length: tokens per pair) with the `listwise` or `pairwise`
    loss, keeping the epoch with the best validation `select_metric` (default NDCG@k; or
    `mrr`, `recall@k`, `loss`)."""
    from finetune.modeling.cross_encoder import build_cross_encoder
    from finetune.modeling.models import (
        check_quantization,
        pick_device,
        use_bf16,
        use_gradient_checkpointing,
    )
    from finetune.training.loop import Rows, TrainingLoop, check_optimizer

    if loss not in LOSSES:
        raise UserError(f"cross-encoder loss: {loss!r} is not one of {', '.join(LOSSES)}.")
    check_groups(groups, "training")
    check_groups(validation_groups, "validation")
    device = pick_device()
    check_quantization(config.model.quant, device)
    check_optimizer(config.train.optim, device)
    bf16 = use_bf16(config.train.precision, device)
    checkpointing = use_gradient_checkpointing(
        config.train.gradient_checkpointing, config.model.quant, device
    )
    model, tokenizer = build_cross_encoder(
        config.model, config.data.max_length, bf16, device, config.train.seed, checkpointing
    )
    train = encode_groups(tokenizer, groups, config.data.max_length)
    validation = encode_groups(tokenizer, validation_groups, config.data.max_length)
    task = CrossEncoderTask(
        train,
        validation,
        group_measure(k),
        device,
        bf16,
        loss,
        select_metric or f"ndcg@{k}",
        config.train.eval_batch_size,
    )
    loop = TrainingLoop(
        model,
        Rows(list(range(len(train))), np.zeros(len(train), dtype=np.int64)),
        Rows(list(range(len(validation))), np.zeros(len(validation), dtype=np.int64)),
        config.train,
        GroupInputs(train),
        device,
        bf16,
        show_progress=show_progress,
        task=task,
    )
    result = loop.run()
    return FittedCrossEncoder(
        model, tokenizer, result, task.kept(model, result.history, result.best_epoch)
    )
