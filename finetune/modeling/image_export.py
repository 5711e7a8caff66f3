"""`finetune export` for image runs: a standalone folder that classifies image files.

The LoRA adapter is merged into the backbone (or, when the run serves its frozen probe,
left out, with the probe as the head) and the whole classifier (backbone, pooling, head,
softmax) is saved as one TorchScript program, `model.pt`; a two-class run's calibration
travels as numbers in `classifier.json` (Platt's two coefficients, isotonic regression's
knots), applied with numpy: `predict.py` needs torch,
Pillow and numpy, not finetune-kit, peft or the backbone's own package. `predict.py` reads
images with the run's own reader (`finetune.data.images.open_rgb` and `_to_rgb`, copied in
as source, so it decodes, rotates and flattens transparency exactly as training did), resizes
to the run's input size and normalises with its mean and std.

Runs whose evaluation images went through a Hugging Face image processor (a hub backbone
without `--image-size`) are refused: the processor's resize-and-crop rules would have to
travel too. The export checks, on images of the run's evaluation split, how far the exported
predictor's probabilities are from the run's.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from finetune.data import images
from finetune.errors import UserError
from finetune.files import staged, write_texts
from finetune.modeling.served_calibration import calibrate

CHECK_IMAGES = 32  # evaluation images used to compare the export with the run

PREDICT_HEAD = '''"""Classify image files with this exported classifier (torch, Pillow, numpy only).

    python predict.py photo1.jpg photo2.png

In Python: `labels, predict_proba = load(folder)`; `predict_proba(paths)` gives one row of
class probabilities per image file, in the order of `labels`, calibrated as the run served
them when it chose a calibration (`load(folder, served=False)`: as the model gives them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch


class UnreadableImage(Exception):
    pass


def first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


'''

PREDICT_TAIL = """

def load(folder=Path(__file__).resolve().parent, served=True):
    from PIL import Image

    folder = Path(folder)
    info = json.loads((folder / "classifier.json").read_text(encoding="utf-8"))
    model = torch.jit.load(str(folder / "model.pt")).eval()
    side, keep = info["image_size"], info["decode_side"]
    mean = torch.tensor(info["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(info["std"], dtype=torch.float32).view(3, 1, 1)

    def pixels(path):
        image = open_rgb(path, max_side=keep).resize((side, side), Image.Resampling.BILINEAR)
        values = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        return (values - mean) / std

    @torch.no_grad()
    def predict_proba(paths, batch_size=32):
        rows = [np.zeros((0, len(info["labels"])))]
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([pixels(path) for path in paths[start : start + batch_size]])
            rows.append(model(batch).numpy())
        proba = np.concatenate(rows)
        return calibrate(proba, info.get("calibration")) if served else proba

    return info["labels"], predict_proba


if __name__ == "__main__":
    sys.stdout.reconfigure(errors="backslashreplace")  # a label the console cannot encode
    labels, predict_proba = load()
    for path, row in zip(sys.argv[1:], predict_proba(sys.argv[1:])):
        print(f"{labels[row.argmax()]}\\t{row.max():.3f}\\t{path}")
"""


class _Probabilities(nn.Module):
    """Pixels in, class probabilities out: what model.pt holds."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(pixel_values).float(), dim=-1)


def predict_source() -> str:
    """predict.py: the run's image reader and the calibration map, as source, between its
    head and its tail."""
    reader = inspect.getsource(images.open_rgb) + "\n\n" + inspect.getsource(images._to_rgb)
    return PREDICT_HEAD + reader + "\n\n" + inspect.getsource(calibrate) + PREDICT_TAIL


def export_image(
    run_folder: Path,
    output: Path,
    labels: list[str],
    served: dict[str, Any] | None = None,
    reference: Callable[[list[str]], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write the standalone image folder; return the agreement checks. `served` (what the run
    serves, evaluation/selection.py's `portable`) brings the frozen probe's `weight` and
    `bias`, when the run serves it, and the calibration; `reference`: the run's served
    probabilities of image paths."""
    from finetune.modeling.vision import load_classifier

    model, inputs, info = load_classifier(run_folder / "adapter")
    if info.processor:
        raise UserError(
            f"{run_folder} prepared its images with {info.backbone}'s image processor, which "
            "the exported predict.py does not carry. Train with --image-size N (a plain "
            "resize), or use the run folder itself (finetune image-classification predict)."
        )
    paths = _check_images(run_folder)
    probe = (served or {}).get("probe")
    if probe is None:
        trained = _run_probabilities(model, inputs, info, paths)
        backbone = model.backbone.merge_and_unload()
    else:  # the run's frozen probe: as the run computes it, the adapter disabled
        model.set_head(probe["weight"], probe["bias"])
        backbone = model.backbone.unload()
    model = model.to("cpu").float()
    model.backbone = backbone.to("cpu").float()
    model.eval()  # EfficientNet-Lite's activations are ReLU6: traceable as they are
    side = info.image_size
    with torch.no_grad():
        traced = torch.jit.trace(
            _Probabilities(model).eval(), torch.zeros((2, 3, side, side)), strict=False
        )
    description = {
        "labels": labels,
        "image_size": side,
        "decode_side": math.ceil(side * 1.15),  # as ImageInputs.encode decodes
        "mean": info.mean,
        "std": info.std,
        "backbone": info.backbone,
        "lora_merged": probe is None,
        "head": "fine-tuned" if probe is None else "frozen probe (embedding_logreg)",
        "calibration": (served or {}).get("calibration"),
    }
    checks: dict[str, Any] = {"texts": len(paths)}  # images: the key every run reports
    with staged(output) as tmp:
        torch.jit.save(traced, str(tmp / "model.pt"))
        described = json.dumps(description, indent=2)
        write_texts(tmp, {"classifier.json": described, "predict.py": predict_source()})
        if probe is None:
            exported = exported_probabilities(tmp, paths, served=False)
            checks["merged_vs_trained_run"] = agreement(exported, trained)
        if served:
            checks["serves"] = served["name"]
            if reference is not None and paths:
                exported = exported_probabilities(tmp, paths)
                checks["served_vs_run"] = agreement(exported, reference(paths))
        checks["run_bf16_autocast"] = info.bf16
        readme = _readme(run_folder, info, labels, checks, probe is not None)
        write_texts(tmp, {"export.json": json.dumps(checks, indent=2), "README.md": readme})
        config = run_folder / "config.yaml"
        if config.is_file():
            shutil.copy(config, tmp / "training_config.yaml")
    return checks


def _check_images(run_folder: Path) -> list[str]:
    import pandas as pd

    predictions = run_folder / "predictions.csv"
    if not predictions.is_file():
        return []
    paths = pd.read_csv(predictions)["path"].dropna().astype(str).tolist()
    return [path for path in paths if Path(path).is_file()][:CHECK_IMAGES]


def _run_probabilities(model: nn.Module, inputs: Any, info: Any, paths: list[str]) -> np.ndarray:
    from finetune.modeling.inference import predict_proba
    from finetune.modeling.models import pick_device

    if not paths:
        return np.zeros((0, 0))
    return predict_proba(model, inputs.encode(paths), inputs, 32, pick_device(), info.bf16)


def exported_probabilities(folder: Path, paths: list[str], served: bool = True) -> np.ndarray:
    """The export's own predict.py, run as a user without finetune-kit would."""
    if not paths:
        return np.zeros((0, 0))
    spec = importlib.util.spec_from_file_location("_exported_predict", folder / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(folder, served=served)[1](paths)


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How far two sets of probabilities are apart: max |difference|, share of equal labels."""
    if a.size == 0:
        return {"max_abs_diff": 0.0, "label_agreement": 1.0}
    return {
        "max_abs_diff": float(np.abs(a - b).max()),
        "label_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
    }


def _readme(run_folder: Path, info: Any, labels: list[str], checks: dict, probe: bool) -> str:
    precision = (
        "The run predicted under bf16 autocast; the export runs in fp32, hence the small "
        "difference."
        if info.bf16
        else "Both run in fp32."
    )
    size = f"{info.image_size} x {info.image_size} px input"
    if probe:
        held = (
            f"Exported from run `{run_folder}`, which serves its frozen probe (chosen on its "
            "validation images or inner folds) rather than its fine-tuned model: "
            f"`{info.backbone}` as pretrained, without the run's LoRA adapter, and the probe's "
            f"logistic regression as the linear head over {len(labels)} labels, {size}, as "
            "one TorchScript program (`model.pt`). The fine-tuned adapter stays in the run "
            "folder."
        )
    else:
        held = (
            f"Exported from run `{run_folder}`: `{info.backbone}` with its LoRA adapter merged "
            f"in, {size}, a linear head over {len(labels)} labels, as one TorchScript program "
            "(`model.pt`)."
        )
    if "serves" in checks:
        held += (
            f" `predict.py` serves `{checks['serves']}`, as the run does (its calibration, if "
            "any, is in `classifier.json`; `load(folder, served=False)`: uncalibrated)."
        )
    lines = ["# Exported image classifier (finetune export)", "", held, ""]
    lines += ["```bash", "python predict.py photo1.jpg photo2.png   # needs torch, Pillow, numpy"]
    lines += ["```", "", f"Checked on {checks['texts']} images of the run's evaluation split:"]
    for key, what in (("merged_vs_trained_run", "the model"), ("served_vs_run", "what it serves")):
        if key in checks:
            lines.append(
                f"- against the run's {what}: max |probability difference| "
                f"{checks[key]['max_abs_diff']:.2e}, label agreement "
                f"{checks[key]['label_agreement']:.1%}."
            )
    return "\n".join([*lines, "", precision, ""])
