"""The classifier of a run's kind: built, saved and loaded by the text or the image modules.

`run.train` and `Run.load` never ask which kind of data a run has: these functions pick the
text (`models`) or image (`vision`) implementation. A classifier of any kind has `backbone`
(a peft model), `head` (a linear layer), `set_head`, `embed(**batch)` (the vector the head
reads) and `forward(**batch)` (logits); its `Inputs` (inputs.py) turns examples into batches.
A text classifier may also read side features (features.py: `model.side_features`); its
`Inputs` is then a `SideFeatures` and its folder holds the fitted encoder (features.json).
Each kind's module is imported only when a run of that kind needs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from finetune.errors import UserError
from finetune.modeling.features import FEATURES_FILE, FeatureEncoder, SideFeatures
from finetune.modeling.inputs import Inputs, TextInputs

if TYPE_CHECKING:
    from finetune.config import Config


def check(kind: str, config: Config) -> None:
    """Fail before any data is read when the backbone cannot do what the config asks."""
    if kind == "image" and config.model.side_features:
        raise UserError(
            "model.side_features: image classifiers read no side features; set "
            "model.side_features=false."
        )
    if kind == "image":
        from finetune.modeling import vision

        vision.check(config)


def build_for_training(
    kind: str,
    config: Config,
    num_labels: int,
    bf16: bool,
    device: str,
    features: FeatureEncoder | None = None,
    **options: Any,
) -> tuple[torch.nn.Module, Inputs, Any]:
    """The classifier of this kind (backbone, LoRA, fresh head), its Inputs and its info.

    `features`: the side-feature encoder fitted on the training rows (text only): the model
    gets a wide part of its width and the Inputs carry its vectors. `options` go to the kind's
    own builder (e.g. gradient checkpointing).
    """
    if kind == "image":
        from finetune.modeling import vision

        return vision.build_for_training(config, num_labels, bf16, device, **options)
    from finetune.modeling import models

    if features is not None:
        options["n_features"] = features.width
    model, tokenizer, info = models.build_for_training(
        config.model, num_labels, config.data.max_length, bf16, device, config.train.seed, **options
    )
    inputs: Inputs = TextInputs(tokenizer, config.data.max_length, info.prompt)
    return model, inputs if features is None else SideFeatures(inputs, features), info


def save_classifier(model: torch.nn.Module, inputs: Inputs, info: Any, folder: Path) -> None:
    if inputs.kind == "image":
        from finetune.modeling import vision

        vision.save_classifier(model, inputs, info, folder)
        return
    from finetune.modeling import models

    models.save_classifier(model, inputs.tokenizer, info, folder)
    if isinstance(inputs, SideFeatures) and inputs.encoder is not None:
        inputs.encoder.save(folder)


def load_classifier(folder: Path) -> tuple[torch.nn.Module, Inputs, Any]:
    """Rebuild a saved classifier of whichever kind `classifier.json` says (text if unsaid)."""
    info_file = folder / "classifier.json"
    if (
        info_file.is_file()
        and json.loads(info_file.read_text(encoding="utf-8")).get("kind") == "image"
    ):
        from finetune.modeling import vision

        return vision.load_classifier(folder)
    from finetune.modeling import models

    model, tokenizer, info = models.load_classifier(folder)
    inputs: Inputs = TextInputs(tokenizer, info.max_length, info.prompt)
    if (folder / FEATURES_FILE).is_file():
        inputs = SideFeatures(inputs, FeatureEncoder.load(folder / FEATURES_FILE))
    return model, inputs, info
