"""Train only the top layers, and compute what lies below them once instead of every step.

With LoRA on the top N of a text backbone's layers (`model.lora_layers`), the layers below
never change: their output for a training text is the same in every epoch. `cache_inputs`
runs those frozen layers once over the training and validation texts and keeps the states
they hand upwards; training then runs (forward and backward) through the top layers only.
It trains faster but was less accurate on Banking77, so no recipe turns it on by default
(docs/benchmarks.md, "Banking77 benchmark").

The model runs from a middle layer as layersplit.py lends it a shorter layer list.
Architectures differ in how they call their layers, so `cache_inputs` first checks on real rows
that the split model computes what the whole model does, and trains without the cache (saying
so) when it does not.

Images (the bundled EfficientNet-Lite with `image.cache_views`): LoRA adapts the top
`image.lora_blocks` blocks, so the stem and the blocks below run once per image and view
(vision.cache_views); augmentation then comes from the cached views only (see
docs/recipes/image-classification.md for what that costs in accuracy and gains in speed).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from finetune.data.columns import Column
from finetune.modeling.features import SideFeatures
from finetune.modeling.heap import release_free_heap
from finetune.modeling.inference import length_sorted_batches, progress_bar, to_device
from finetune.modeling.inputs import Inputs, TokenBatches, padded_width
from finetune.modeling.layersplit import lower_states
from finetune.modeling.models import autocast
from finetune.modeling.vision import ImageInputs, cache_views

# What a forward pass raises when the shortened layer list or the pass-through embeddings do
# not fit how an architecture calls them: an unexpected argument or attribute, a shape or
# index check, a missing per-layer entry. A MemoryError or KeyboardInterrupt is none of these.
SPLIT_ERRORS = (TypeError, AttributeError, ValueError, RuntimeError, IndexError, KeyError)


class CachedStates(Inputs):
    """Items are row numbers into one flat tensor of cached states (no per-row tensors)."""

    kind = "text"

    def __init__(self, flat: torch.Tensor, offsets: np.ndarray, lengths: np.ndarray):
        self.flat, self.offsets, self.row_lengths = flat, offsets, lengths

    def collate(self, items: list[int], train: bool = False) -> dict[str, torch.Tensor]:
        width = padded_width(self.row_lengths[items].tolist())
        states = self.flat.new_zeros((len(items), width, self.flat.shape[1]))
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            start, length = int(self.offsets[item]), int(self.row_lengths[item])
            states[row, :length] = self.flat[start : start + length]
            mask[row, :length] = 1
        return {"states": states, "attention_mask": mask}

    def lengths(self, items: Sequence[int]) -> list[int]:
        return self.row_lengths[np.asarray(items, dtype=np.int64)].tolist()


def build_cache(
    model: nn.Module,
    items: Sequence[Any],
    inputs: Inputs,
    batch_size: int,
    device: str,
    bf16: bool,
    width: int | None = None,
    progress: str | None = None,
) -> CachedStates:
    """The states entering `model.first_trained_layer` for every item (`width`: the states'
    size, by default the classifier head's input size; `progress`: a progress bar's label)."""
    first = model.first_trained_layer
    lengths = np.asarray(inputs.lengths(items), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = torch.empty(
        (int(lengths.sum()), width or model.head.in_features),
        dtype=torch.bfloat16 if bf16 else torch.float32,
    )
    was_training = model.training
    model.eval()
    with torch.inference_mode(), progress_bar(progress, len(items)) as bar:
        for chunk, batch in length_sorted_batches(items, lengths.tolist(), batch_size):
            encoded = to_device(inputs.collate(batch), device)
            with autocast(device, bf16):
                states = lower_states(model.backbone, first, **encoded)
            for row, item in enumerate(chunk):
                start, length = offsets[item], lengths[item]
                flat[start : start + length] = states[row, :length].to("cpu", flat.dtype)
            bar.update(len(chunk))
    model.train(was_training)
    return CachedStates(flat, offsets, lengths)


def _computes_the_same(
    model: nn.Module,
    cache: Inputs,
    cached: Sequence[Any],
    items: Sequence[Any],
    inputs: Inputs,
    device: str,
    bf16: bool,
) -> bool:
    """Does the split model give the whole model's logits on a few rows (eval mode)?
    `cached[i]` is the cache's item for `items[i]`."""

    rows = list(range(min(8, len(items))))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, bf16):
            whole = model(**to_device(inputs.collate([items[i] for i in rows]), device)).float()
            split = model(**to_device(cache.collate([cached[i] for i in rows]), device)).float()
    except torch.OutOfMemoryError:  # a RuntimeError, but no sign of an unsplittable model
        raise
    except SPLIT_ERRORS:  # an architecture that cannot be run from a middle layer
        return False
    finally:
        model.train(was_training)
    if whole.shape != split.shape:
        return False
    # bf16 states differ in the last bits; a wrong split differs in every logit.
    tolerance = 0.05 if bf16 else 1e-3
    return bool(((whole - split).abs().max() / whole.abs().max().clamp(min=1e-6)) < tolerance)


# Models whose split was checked and failed: the run's later passes (training, inner folds)
# do not build and check their cache again.
_UNSPLITTABLE: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def cache_inputs(
    model: nn.Module,
    inputs: Inputs,
    groups: list[Sequence[Any]],
    batch_size: int,
    device: str,
    bf16: bool,
    progress: str | None = None,
) -> tuple[Inputs, list[list[Any]]] | None:
    """Cached lower-layer states for each group of items, as (Inputs, the groups' new items);
    `progress`: the label of a progress bar over the texts (None: none).

    None when there is nothing to cache: every layer trains, the items are not token ids, or
    they live in memory-mapped files (the states of data larger than RAM would not fit in it).
    Side features (features.SideFeatures) stay with their rows: the cache holds the texts'
    states, and each new item pairs a row's states with its feature vector.
    """
    if isinstance(inputs, ImageInputs):
        return _cache_images(model, inputs, groups, batch_size, device, bf16)
    texts = inputs.inner if isinstance(inputs, SideFeatures) else inputs
    if not getattr(model, "first_trained_layer", 0) or not isinstance(texts, TokenBatches):
        return None
    if model in _UNSPLITTABLE:  # found so once already: said so, and trains uncached
        return None
    if any(isinstance(group, Column) for group in groups):
        print("model.lora_layers: the lower layers' states are not cached for data.memory_map.")
        return None
    items = [item for group in groups for item in group]
    if not items:
        return None
    # Checked on a few rows before the long pass over all of them.
    few = items[:8]
    checked = _states(model, few, inputs, len(few), device, bf16)
    if not _computes_the_same(model, *checked, few, inputs, device, bf16):
        print(
            "model.lora_layers: this architecture cannot be run from a middle layer here; "
            "training runs through every layer instead (same result, slower)."
        )
        _UNSPLITTABLE.add(model)
        return None
    cache, cached = _states(model, items, inputs, batch_size, device, bf16, progress)
    release_free_heap()  # the forward passes' garbage, before training starts on top of it
    return cache, _renumbered(groups, cached)


def _states(
    model: nn.Module,
    items: list[Any],
    inputs: Inputs,
    batch_size: int,
    device: str,
    bf16: bool,
    progress: str | None = None,
) -> tuple[Inputs, list[Any]]:
    """The cache of `items` and each one's new item in it (with side features, the row's
    states paired with its feature vector)."""
    side = inputs if isinstance(inputs, SideFeatures) else None
    texts = side.inner if side is not None else inputs
    text_items = [item[0] for item in items] if side is not None else items
    cache: Inputs = build_cache(
        model, text_items, texts, batch_size, device, bf16, progress=progress
    )
    cached: list[Any] = list(range(len(items)))
    if side is not None:
        cache = side.with_inner(cache)
        cached = [(row, item[1]) for row, item in zip(cached, items, strict=True)]
    return cache, cached


def _cache_images(
    model: nn.Module,
    inputs: ImageInputs,
    groups: list[Sequence[Any]],
    batch_size: int,
    device: str,
    bf16: bool,
) -> tuple[Inputs, list[list[Any]]] | None:
    """An EfficientNet's frozen lower blocks' output for each image (image.cache_views views),
    checked like the text cache: the whole model and the cached one give the same logits."""
    if not getattr(model, "first_trained_layer", 0):
        return None
    items = [item for group in groups for item in group]
    if not items:
        return None
    cache = cache_views(model, inputs, items, batch_size, device, bf16)
    release_free_heap()
    cached = list(range(len(items)))
    if not _computes_the_same(model, cache, cached, items, inputs, device, bf16):
        print(
            "image.cache_views: the cached blocks do not reproduce the model here; training "
            "runs through every block instead (same result, slower)."
        )
        return None
    return cache, _renumbered(groups, cached)


def _renumbered(groups: list[Sequence[Any]], cached: list[Any]) -> list[list[Any]]:
    """`cached` (one new item per item of the groups, in order) cut back into the groups."""
    renumbered, start = [], 0
    for group in groups:
        renumbered.append(cached[start : start + len(group)])
        start += len(group)
    return renumbered
