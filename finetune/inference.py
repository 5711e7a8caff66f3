"""Batched forward passes: class probabilities for predictions, pooled vectors for baselines.

Texts are sorted by length and padded per batch so short messages do not pay for long ones;
results come back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from finetune.models import TextClassifier, autocast


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return encoded["input_ids"]


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


def _length_sorted_batches(
    sequences: list[list[int]], batch_size: int
) -> Iterator[tuple[np.ndarray, list[list[int]]]]:
    order = np.argsort([-len(s) for s in sequences], kind="stable")
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        yield chunk, [sequences[i] for i in chunk]


@torch.inference_mode()
def _run(
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sequences: list[list[int]],
    pad_id: int,
    batch_size: int,
    device: str,
    bf16: bool,
) -> np.ndarray:
    outputs: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    for chunk, batch in _length_sorted_batches(sequences, batch_size):
        ids, mask = pad_batch(batch, pad_id)
        with autocast(device, bf16):
            result = step(ids.to(device), mask.to(device))
        outputs.append(result.float().cpu().numpy())
        positions.append(chunk)
    stacked = np.concatenate(outputs)
    restored = np.empty_like(stacked)
    restored[np.concatenate(positions)] = stacked
    return restored


def predict_proba(
    model: TextClassifier,
    sequences: list[list[int]],
    pad_id: int,
    batch_size: int,
    device: str,
    bf16: bool,
) -> np.ndarray:
    was_training = model.training
    model.eval()
    logits = _run(model, sequences, pad_id, batch_size, device, bf16)
    model.train(was_training)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def embed(
    model: TextClassifier,
    sequences: list[list[int]],
    pad_id: int,
    batch_size: int,
    device: str,
    bf16: bool,
) -> np.ndarray:
    """Pooled backbone vectors (what the head sees), without the head."""
    was_training = model.training
    model.eval()
    vectors = _run(model.embed, sequences, pad_id, batch_size, device, bf16)
    model.train(was_training)
    return vectors
