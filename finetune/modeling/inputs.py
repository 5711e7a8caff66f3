"""How examples become model input: one `Inputs` per kind of data, behind one workflow.

`run.train`, `train.fit` and `inference` never look inside an example. They ask the run's
`Inputs` to `encode` the examples' strings (texts, or image file paths for images) into items
once, to `collate` a list of items into the model's keyword arguments (with training-time
augmentation when `train=True`), and for the items' `lengths` (token counts, so batches of
similar length pad little; None where every item has the same size, as images do).

Each kind also builds, saves and loads its classifier: `build_for_training`,
`save_classifier` and `load_classifier` below pick the text (`finetune.modeling.models`) or image
(`finetune.modeling.vision`) implementation. A classifier of any kind has `backbone` (a peft model),
`head` (a linear layer), `set_head`, `embed(**batch)` (the vector the head reads) and
`forward(**batch)` (logits).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from finetune.data.memmap import Column

if TYPE_CHECKING:
    from finetune.config import Config

KINDS = ("text", "image")


class Inputs:
    """Turns the examples' strings into model inputs; see the module docstring."""

    kind: str = ""

    def encode(self, texts: list[str]) -> list[Any]:
        raise NotImplementedError

    def collate(self, items: list[Any], train: bool = False) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def lengths(self, items: list[Any]) -> list[int] | None:
        return None

    def notes(self, *groups: Sequence[Any]) -> list[str]:
        """Facts about groups of encoded items worth a line in the report (e.g. truncation)."""
        return []

    def save(self, folder: Path) -> None:
        """Write what `load_classifier` needs to encode new examples the same way."""


class TokenBatches(Inputs):
    """Token-id sequences padded to the longest in their batch."""

    kind = "text"

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def collate(self, items: list[list[int]], train: bool = False) -> dict[str, torch.Tensor]:
        from finetune.modeling.inference import pad_batch

        ids, mask = pad_batch(items, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}

    def lengths(self, items: Sequence[list[int]]) -> Sequence[int]:
        if isinstance(items, Column):
            return items.list_lengths()
        return [len(item) for item in items]


class TextInputs(TokenBatches):
    """Texts tokenized and truncated to `max_length` tokens."""

    def __init__(self, tokenizer: Any, max_length: int):
        super().__init__(tokenizer.pad_token_id)
        self.tokenizer = tokenizer
        self.max_length = max_length

    def encode(self, texts: Sequence[str]) -> Sequence[list[int]]:
        from finetune.modeling.inference import tokenize

        if isinstance(texts, Column):  # data.memory_map: token ids go to disk too
            import pyarrow as pa

            return texts.transform(
                lambda chunk: tokenize(self.tokenizer, chunk, self.max_length), pa.list_(pa.int32())
            )
        return tokenize(self.tokenizer, texts, self.max_length)

    def notes(self, *groups: Sequence[list[int]]) -> list[str]:
        truncated = sum(int((np.asarray(self.lengths(g)) >= self.max_length).sum()) for g in groups)
        if not truncated:
            return []
        return [f"{truncated} texts reached max_length={self.max_length} tokens."]

    def save(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(str(folder))


def batches_of(inputs: Inputs | int) -> Inputs:
    """An `Inputs`, or a pad token id meaning "token ids padded with it" (the text API)."""
    return TokenBatches(inputs) if isinstance(inputs, int) else inputs


def check(kind: str, config: Config) -> None:
    """Fail before any data is read when the backbone cannot do what the config asks."""
    if kind == "image":
        from finetune.modeling import vision

        vision.check(config)


def build_for_training(
    kind: str, config: Config, num_labels: int, bf16: bool, device: str, **options: Any
) -> tuple[torch.nn.Module, Inputs, Any]:
    """The classifier of this kind (backbone, LoRA, fresh head), its Inputs and its info.

    `options` go to the kind's own builder (e.g. gradient checkpointing).
    """
    if kind == "image":
        from finetune.modeling import vision

        return vision.build_for_training(config, num_labels, bf16, device, **options)
    from finetune.modeling import models

    model, tokenizer, info = models.build_for_training(
        config.model, num_labels, config.data.max_length, bf16, device, config.train.seed, **options
    )
    return model, TextInputs(tokenizer, config.data.max_length), info


def save_classifier(model: torch.nn.Module, inputs: Inputs, info: Any, folder: Path) -> None:
    if inputs.kind == "image":
        from finetune.modeling import vision

        vision.save_classifier(model, inputs, info, folder)
        return
    from finetune.modeling import models

    models.save_classifier(model, inputs.tokenizer, info, folder)


def load_classifier(folder: Path) -> tuple[torch.nn.Module, Inputs, Any]:
    """Rebuild a saved classifier of whichever kind `classifier.json` says (text if unsaid)."""
    info_file = folder / "classifier.json"
    if info_file.is_file() and json.loads(info_file.read_text()).get("kind") == "image":
        from finetune.modeling import vision

        return vision.load_classifier(folder)
    from finetune.modeling import models

    model, tokenizer, info = models.load_classifier(folder)
    return model, TextInputs(tokenizer, info.max_length), info
