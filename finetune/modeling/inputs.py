"""How examples become model input: one `Inputs` per kind of data, behind one workflow.

`run.train`, the training loop and `inference` never look inside an example. They ask the run's
`Inputs` to `encode` the examples' strings (texts, or image file paths for images) into items
once, to `collate` a list of items into the model's keyword arguments (with training-time
augmentation when `train=True`), and for the items' `lengths` (token counts, so batches of
similar length pad little; None where every item has the same size, as images do).

Texts are tokenized (`tokenize`) and padded per batch (`pad_batch`) here. Building, saving and
loading each kind's classifier is classifiers.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from finetune.data.columns import Column

if TYPE_CHECKING:
    from finetune.data.tables import Examples

KINDS = ("text", "image")


def tokenize(
    tokenizer: Any, texts: list[str], max_length: int, prompt: str = ""
) -> list[list[int]]:
    """Token ids of `texts`, each after `prompt` (a text classifier's model.prompt)."""
    encoded = tokenizer([prompt + text for text in texts], truncation=True, max_length=max_length)
    return encoded["input_ids"]


# Batches are padded to a multiple of this many tokens. Every distinct batch shape costs the
# process memory it never gets back (kernels compiled per shape, heap fragments), so fewer
# widths use less (docs/benchmarks.md, "Memory"); short messages get more padding.
PAD_MULTIPLE = 8
# Texts with more than this share of their tokens unknown to the vocabulary get a warning.
UNKNOWN_SHARE = 0.05


def padded_width(lengths: Sequence[int]) -> int:
    return -(-max(lengths) // PAD_MULTIPLE) * PAD_MULTIPLE


def pad_batch(
    sequences: list[list[int]], pad_id: int, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (or `left`-padded, for decoding) input_ids and attention_mask,
    `padded_width` wide.

    The same tensors as `tokenizer.pad(..., padding_side="right", pad_to_multiple_of=8)`
    (tests/test_layer_cache.py checks it), written out because the text API pads with a pad id
    alone (`batches_of(pad_id)`, e.g. export's checks), where there is no tokenizer to call,
    and because inference sizes batches and the layer cache pads states by `padded_width`.
    """
    width = padded_width([len(s) for s in sequences])
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, span] = torch.tensor(sequence, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


class Inputs:
    """Turns the examples' strings into model inputs; see the module docstring."""

    kind: str = ""
    # The batch entry train.mixup may blend between examples (pixels, cached image features);
    # None where blending means nothing (token ids).
    mixable: str | None = None

    def encode(self, texts: list[str]) -> list[Any]:
        raise NotImplementedError

    def encode_examples(self, examples: Examples) -> Sequence[Any]:
        """Items for whole examples: their strings, plus their side data where an `Inputs`
        reads it (features.SideFeatures)."""
        return self.encode(examples.texts)

    def collate(self, items: list[Any], train: bool = False) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def lengths(self, items: list[Any]) -> list[int] | None:
        return None

    def notes(self, *groups: Sequence[Any]) -> list[str]:
        """Facts about groups of encoded items worth a line in the report (e.g. truncation)."""
        return []

    def warnings(self, *groups: Sequence[Any]) -> list[str]:
        """Report notes worth saying before training too (the model cannot read the text);
        not repeated by `notes`."""
        return []

    def save(self, folder: Path) -> None:
        """Write what `load_classifier` needs to encode new examples the same way."""


class TokenBatches(Inputs):
    """Token-id sequences padded to the longest in their batch."""

    kind = "text"

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def collate(self, items: list[list[int]], train: bool = False) -> dict[str, torch.Tensor]:
        ids, mask = pad_batch(items, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}

    def lengths(self, items: Sequence[list[int]]) -> Sequence[int]:
        if isinstance(items, Column):
            return items.list_lengths()
        return [len(item) for item in items]


class TextInputs(TokenBatches):
    """Texts, each after `prompt`, tokenized and truncated to `max_length` tokens."""

    def __init__(self, tokenizer: Any, max_length: int, prompt: str = ""):
        super().__init__(tokenizer.pad_token_id)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.prompt = prompt

    def encode(self, texts: Sequence[str]) -> Sequence[list[int]]:
        if isinstance(texts, Column):  # data.memory_map: token ids go to disk too
            import pyarrow as pa

            return texts.transform(
                lambda chunk: tokenize(self.tokenizer, chunk, self.max_length, self.prompt),
                pa.list_(pa.int32()),
            )
        return tokenize(self.tokenizer, texts, self.max_length, self.prompt)

    def notes(self, *groups: Sequence[list[int]]) -> list[str]:
        truncated = sum(int((np.asarray(self.lengths(g)) >= self.max_length).sum()) for g in groups)
        notes = [f"{truncated} texts reached max_length={self.max_length} tokens."]
        notes = notes[: bool(truncated)]
        if self.prompt:
            notes.append(f"Every text follows the model's prompt {self.prompt!r} (model.prompt).")
        return notes

    def warnings(self, *groups: Sequence[list[int]]) -> list[str]:
        """A warning when the vocabulary misses much of the text: an English model reads about
        60% of a Chinese review's characters as [UNK] (docs/models.md, "Chinese")."""
        lists = [g for g in groups if not isinstance(g, Column)]  # memory-mapped: not checked
        share = unknown_share(self.tokenizer, [ids for g in lists for ids in list(g)[:2000]])
        if share < UNKNOWN_SHARE:
            return []
        return [
            f"{share:.0%} of the tokens are unknown to this model's vocabulary: it cannot read "
            "much of this text. Use a model that covers its language (for Chinese: --model "
            "embeddinggemma, see `finetune models`)."
        ]

    def save(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(str(folder))


def unknown_share(tokenizer: Any, id_lists: Sequence[list[int]]) -> float:
    """The share of these token ids that are the tokenizer's unknown token (0 without one)."""
    unk = tokenizer.unk_token_id
    total = sum(len(ids) for ids in id_lists)
    if unk is None or not total:
        return 0.0
    return sum(list(ids).count(unk) for ids in id_lists) / total


def batches_of(inputs: Inputs | int) -> Inputs:
    """An `Inputs`, or a pad token id meaning "token ids padded with it" (the text API)."""
    return TokenBatches(inputs) if isinstance(inputs, int) else inputs
