"""The classifier of a run's kind: built, saved and loaded by the text or the image modules.

`run.train` and `Run.load` never ask which kind of data a run has: these functions pick the
text (`models`) or image (`vision`) implementation. A classifier of any kind has `backbone`
(a peft model), `head` (a linear layer), `set_head`, `embed(**batch)` (the vector the head
reads) and `forward(**batch)` (logits); its `Inputs` (inputs.py) turns examples into batches.
Each kind's module is imported only when a run of that kind needs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from finetune.modeling.inputs import Inputs, TextInputs

if TYPE_CHECKING:
    from finetune.config import Config


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
