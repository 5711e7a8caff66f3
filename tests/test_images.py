"""Images through the engine: both input layouts, odd files, augmentation, a tiny random ViT
end to end (run folder, report, reload, CLI), and --quant where it does and does not apply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from run_checks import check_reported_figures
from typer.testing import CliRunner

from finetune.data.images import open_rgb, read_folder, read_image_split, read_images
from finetune.errors import UserError
from recipes.image_classification import recipe

COLOURS = {"red": (200, 30, 30), "green": (30, 170, 40), "blue": (40, 60, 210)}
UNREADABLE = ("red/broken.jpg", "green/truncated.png", "blue/empty.jpg")


def draw(colour: tuple[int, int, int], rng: np.random.Generator, size: tuple[int, int]):
    """A shape of the class colour on a noisy grey background."""
    from PIL import ImageDraw

    background = rng.integers(90, 170)
    pixels = rng.normal(background, 20, (size[1], size[0], 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    w, h = size
    box = [w * rng.uniform(0, 0.3), h * rng.uniform(0, 0.3), w * rng.uniform(0.7, 1)]
    box.append(h * rng.uniform(0.7, 1))
    shape = ImageDraw.Draw(image).ellipse if rng.random() < 0.5 else ImageDraw.Draw(image).rectangle
    shape(box, fill=colour)
    return image


def save_varied(image: Image.Image, path: Path, index: int) -> None:
    """Every few images in another format or mode: JPEG, RGBA PNG, palette, grayscale."""
    kind = index % 5
    if kind == 0:
        image.save(path.with_suffix(".jpg"), quality=90)
    elif kind == 1:
        rgba = image.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(path.with_suffix(".png"))
    elif kind == 2:
        image.quantize(64).save(path.with_suffix(".png"))
    elif kind == 3 and index % 10 == 3:
        image.convert("L").save(path.with_suffix(".png"))
    else:
        image.save(path.with_suffix(".png"))


def make_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))  # odd sizes
            save_varied(draw(colour, rng, size), root / label / f"{label}_{i:03d}", i)
    return root


def add_unreadable(root: Path) -> None:
    (root / UNREADABLE[0]).write_bytes(b"\xff\xd8\xff not really a jpeg")
    valid = root / "green" / "whole.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(valid)
    (root / UNREADABLE[1]).write_bytes(valid.read_bytes()[:60])
    valid.unlink()
    (root / UNREADABLE[2]).write_bytes(b"")
    (root / "notes.txt").write_text("not an image, ignored")


@pytest.fixture(scope="session")
def image_data(tmp_path_factory) -> Path:
    """train/ and test/ image folders of three colour classes, with unreadable files in train/."""
    root = tmp_path_factory.mktemp("images")
    make_folder(root / "train", 16, seed=1)
    make_folder(root / "test", 6, seed=2)
    add_unreadable(root / "train")
    return root


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide random ViT image classifier with its (PIL) image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil, set_seed

    folder = tmp_path_factory.mktemp("tiny-vit")
    set_seed(0)
    config = ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        image_size=32,
        patch_size=8,
        num_labels=5,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def vit_config(model_dir: Path, data: Path, output: Path, **model):
    return recipe.config(
        data={"path": str(data)},
        model={"name": str(model_dir), "lora_r": 4, "lora_alpha": 8, **model},
        # One validation hold-out (not the photo default's inner folds): a faster test.
        train={"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "select_folds": "0"},
        output=str(output),
    )


@pytest.fixture(scope="module")
def vit_run(tiny_vit_dir, image_data, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "vit"
    return recipe.train(vit_config(tiny_vit_dir, image_data, output), show_progress=False)


# Reading ----------------------------------------------------------------------------------


def test_image_folder_layout_labels_and_skips_unreadable(image_data):
    examples = read_folder(image_data / "train", strict=False)
    assert sorted(set(examples.labels)) == ["blue", "green", "red"]
    assert len(examples) == 48
    assert sorted(examples.skipped) == sorted(UNREADABLE)
    assert all(Path(p).suffix in (".jpg", ".png") for p in examples.texts)
    with pytest.raises(UserError, match=r"cannot read image blue/empty.jpg \(not an image"):
        read_folder(image_data / "train", strict=True)


def test_train_and_test_subfolders_are_the_split(image_data, tmp_path):
    train, evaluation = read_image_split(image_data, "path", "label", strict=False)
    assert (len(train), len(evaluation)) == (48, 18)
    assert evaluation.source.endswith("test")
    # val/ evaluates when there is no test/; with both, val/ joins the training rows.
    make_folder(tmp_path / "train", 3, seed=5)
    make_folder(tmp_path / "val", 2, seed=6)
    train, evaluation = read_image_split(tmp_path, "path", "label", strict=False)
    assert (len(train), len(evaluation)) == (9, 6) and evaluation.source.endswith("val")
    make_folder(tmp_path / "test", 1, seed=7)
    train, evaluation = read_image_split(tmp_path, "path", "label", strict=False)
    assert (len(train), len(evaluation)) == (15, 3) and evaluation.source.endswith("test")


def test_folds_pool_the_classes_of_train_and_test_not_the_split_names(image_data):
    from finetune.crossval import pooled_examples
    from finetune.evaluation.folds import fold_indices

    config = recipe.config(data={"path": str(image_data)}, eval={"folds": 3})
    pooled = pooled_examples(recipe, config)
    assert len(pooled) == 48 + 18
    assert sorted(set(pooled.labels)) == ["blue", "green", "red"]
    for path, label in zip(pooled.texts, pooled.labels, strict=True):
        assert Path(path).parent.name == label  # each image keeps its class folder's label
    assert sorted(pooled.skipped) == sorted(UNREADABLE)
    held = sorted(i for _, rows in fold_indices(pooled.labels, 3, seed=0) for i in rows)
    assert held == list(range(66))
    # Read as labelled data anywhere else, the split folder is refused, not labelled by split.
    with pytest.raises(UserError, match=r"holds a dataset split \(train/, test/\), not one"):
        read_images(image_data, "path", "label", strict=False)


def test_csv_of_paths_relative_to_the_csv(image_data, tmp_path):
    rows = [
        {"path": f"images/{label}/{p.name}", "label": label, "id": i}
        for i, (label, p) in enumerate(
            (label, p) for label in COLOURS for p in sorted((image_data / "test" / label).iterdir())
        )
    ]
    (tmp_path / "images").symlink_to(image_data / "test")
    rows.append({"path": "images/red/missing.png", "label": "red", "id": 99})
    pd.DataFrame(rows).to_csv(tmp_path / "data.csv", index=False)
    examples = read_images(tmp_path / "data.csv", "path", "label", strict=False)
    assert len(examples) == 18 and examples.skipped == ["images/red/missing.png"]
    assert list(examples.features["id"]) == [str(i) for i in range(18)]  # the rows kept
    assert all(Path(p).is_file() for p in examples.texts)
    with pytest.raises(UserError, match="missing.png \\(file not found\\)"):
        read_images(tmp_path / "data.csv", "path", "label", strict=True)
    with pytest.raises(UserError, match="no text column 'file'"):
        read_images(tmp_path / "data.csv", "file", "label", strict=False)


def test_layout_mistakes_are_named(tmp_path):
    with pytest.raises(UserError, match="Data not found"):
        read_images(tmp_path / "nope", "path", "label", strict=False)
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(UserError, match="empty: no images found. Expected one sub-folder per"):
        read_images(tmp_path / "empty", "path", "label", strict=False)
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(UserError, match="sub-folder named after its class"):
        read_folder(tmp_path, strict=False)
    (tmp_path / "loose.png").unlink()
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "a.png").write_bytes(b"junk")
    with pytest.raises(UserError, match="none of its 1 image files could be read"):
        read_folder(tmp_path, strict=False)


@pytest.mark.parametrize(
    "mode, size",
    [("L", (17, 40)), ("RGBA", (300, 7)), ("P", (33, 33)), ("I;16", (21, 12)), ("CMYK", (9, 9))],
)
def test_any_mode_and_size_becomes_rgb(mode, size, tmp_path):
    if mode == "I;16":
        image = Image.fromarray(np.arange(size[0] * size[1], dtype=np.uint16).reshape(size[::-1]))
    else:
        image = Image.new(mode, size)
    if mode == "RGBA":
        image.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent: shows as white
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    rgb = open_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == size
    if mode == "RGBA":
        assert rgb.getpixel((0, 0)) == (255, 255, 255)
    if mode == "I;16":  # 16-bit range stretched to 8 bits, not clipped
        assert np.asarray(rgb).max() == 255 and np.asarray(rgb).min() == 0


# Model inputs -----------------------------------------------------------------------------


def test_augmentation_only_in_training_and_seeded(image_data):
    from finetune.modeling.vision import ImageClassifierInfo, ImageInputs

    info = ImageClassifierInfo("efficientnet-lite0", "efficientnet-lite0", 3, 1280, 40, False)
    paths = read_folder(image_data / "test", strict=True).texts[:6]
    inputs = ImageInputs(info, None, crop_scale=0.5, hflip=True)
    items = inputs.encode(paths)
    evaluated = inputs.collate(items)["pixel_values"]
    assert evaluated.shape == (6, 3, 40, 40) and evaluated.dtype == torch.float32
    assert -1 <= evaluated.min() and evaluated.max() <= 1  # (x - 0.5) / 0.5
    torch.testing.assert_close(evaluated, inputs.collate(items)["pixel_values"])
    torch.manual_seed(7)  # the run seeds torch's generator; augmentation draws from it
    augmented = inputs.collate(items, train=True)["pixel_values"]
    assert augmented.shape == evaluated.shape and not torch.equal(augmented, evaluated)
    torch.manual_seed(7)
    torch.testing.assert_close(augmented, inputs.collate(items, train=True)["pixel_values"])


def test_unreadable_image_at_prediction_is_a_user_error(vit_run, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(UserError, match="Cannot read image .*bad.png"):
        vit_run.predict_proba([str(tmp_path / "bad.png")])


# A run end to end on a tiny random ViT ----------------------------------------------------


def test_vit_run_folder_metrics_and_report(vit_run):
    folder = vit_run.folder
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in ("accuracy", "recall", "f1", "auc", "per_class", "baselines"):
        assert key in metrics, key
    assert set(metrics["baselines"]) == {"embedding_logreg", "pixel_logreg"}
    assert metrics["average"] == "macro" and metrics["n_eval"] == 18
    check_reported_figures(folder)
    assert metrics["skipped_inputs"]["count"] == 3
    # Colour classes: raw pixels separate them, whatever the random backbone does.
    assert metrics["baselines"]["pixel_logreg"]["accuracy"] > 0.8
    report = (folder / "report.md").read_text()
    assert "3 unreadable inputs skipped" in report and "red/broken.jpg" in report
    assert "## Most confident mistakes" in report and "## Per class" in report
    if metrics["image"]["mistakes"]:
        assert (folder / "plots" / "mistakes.png").is_file()
    assert (folder / "plots" / "confusion_matrix.png").is_file()
    info = json.loads((folder / "adapter" / "classifier.json").read_text())
    assert info["kind"] == "image" and info["lora_targets"] == ["q_proj", "v_proj"]
    assert info["processor"] and info["image_size"] == 32
    assert (folder / "adapter" / "preprocessor_config.json").is_file()
    saved = (folder / "config.yaml").read_text()
    assert "hflip: true" in saved  # user data: the photo defaults, not the digits ones


def test_vit_reload_predicts_identically(vit_run):
    saved = pd.read_csv(vit_run.folder / "predictions.csv")
    reloaded = recipe.load(vit_run.folder)
    paths = saved["path"].tolist()
    np.testing.assert_allclose(reloaded.predict_proba(paths), vit_run.predict_proba(paths), atol=0)
    assert reloaded.predict(paths) == saved["predicted_label"].tolist()


def test_cli_evaluate_and_predict_on_folders_and_csv(vit_run, image_data, tmp_path):
    from finetune.cli import app

    runner = CliRunner()
    folder = str(vit_run.folder)
    result = runner.invoke(
        app,
        ["image-classification", "evaluate", "--run", folder, "--data", str(image_data / "test")],
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads((vit_run.folder / "evaluations" / "test.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(vit_run.metrics["accuracy"])

    out = tmp_path / "pred.csv"
    result = runner.invoke(
        app,
        [
            "image-classification",
            "predict",
            "--run",
            folder,
            "--data",
            str(image_data / "train"),
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Skipped 3 unreadable" in result.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["path", "predicted_label", "probability"] and len(frame) == 48

    table = tmp_path / "new.csv"
    pd.DataFrame(
        {"path": [str(p) for p in frame["path"][:2]] + ["nowhere.png"], "id": [1, 2, 3]}
    ).to_csv(table, index=False)
    result = runner.invoke(
        app,
        [
            "image-classification",
            "predict",
            "--run",
            folder,
            "--data",
            str(table),
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame["id"]) == [1, 2] and set(frame["predicted_label"]) <= set(COLOURS)

    one = str(next((image_data / "test" / "red").iterdir()))
    result = runner.invoke(app, ["image-classification", "predict", "--run", folder, "--text", one])
    assert result.exit_code == 0 and result.output.split("\t")[0] in COLOURS


def test_quantized_vit_trains_and_reloads(tiny_vit_dir, image_data, tmp_path):
    import bitsandbytes as bnb

    config = vit_config(tiny_vit_dir, image_data, tmp_path / "q", quant="8bit")
    config.train.max_steps = 2
    run = recipe.train(config, show_progress=False)
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in run.model.backbone.modules())
    paths = read_folder(image_data / "test", strict=True).texts[:5]
    reloaded = recipe.load(run.folder)
    np.testing.assert_allclose(reloaded.predict_proba(paths), run.predict_proba(paths), atol=1e-5)


def test_quant_where_it_does_not_apply_is_a_clear_error(image_data, tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessorPil

    config = recipe.config(
        data={"path": str(image_data)}, model={"quant": "8bit"}, output=str(tmp_path / "e")
    )
    with pytest.raises(UserError, match="efficientnet-lite0 is convolutional"):
        recipe.train(config, show_progress=False)
    resnet = tmp_path / "resnet"
    ResNetForImageClassification(
        ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8)
    ).save_pretrained(resnet)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(resnet)
    config = vit_config(resnet, image_data, tmp_path / "r", quant="4bit")
    with pytest.raises(UserError, match="'.*resnet' \\(resnet\\) is convolutional"):
        recipe.train(config, show_progress=False)
    assert not (tmp_path / "e").exists() and not (tmp_path / "r").exists()


def test_own_image_size_resizes_and_interpolates_positions(tiny_vit_dir, image_data, tmp_path):
    config = vit_config(tiny_vit_dir, image_data, tmp_path / "s")
    config.image.size = 48
    config.train.max_steps = 1
    run = recipe.train(config, show_progress=False)
    info = json.loads((run.folder / "adapter" / "classifier.json").read_text())
    assert info["image_size"] == 48 and info["interpolate_pos_encoding"] and not info["processor"]
    paths = read_folder(image_data / "test", strict=True).texts[:3]
    np.testing.assert_allclose(
        recipe.load(run.folder).predict_proba(paths), run.predict_proba(paths), atol=0
    )


# The bundled, pretrained EfficientNet-Lite0 ---------------------------------------------------


def photo_crops(root: Path, per_class: int, seed: int) -> Path:
    """Random square crops of scikit-learn's two sample photos (a temple, a flower)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    for name, pixels in zip(("china", "flower"), load_sample_images().images, strict=True):
        photo = Image.fromarray(pixels)
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(60, 200))
            x, y = (
                int(rng.integers(0, photo.width - side)),
                int(rng.integers(0, photo.height - side)),
            )
            photo.crop((x, y, x + side, y + side)).save(root / name / f"{i:02d}.jpg")
    return root


def test_bundled_efficientnet_trains_and_reloads_identically(tmp_path):
    photo_crops(tmp_path / "photos" / "train", 20, seed=1)
    photo_crops(tmp_path / "photos" / "test", 8, seed=2)
    config = recipe.config(
        data={"path": str(tmp_path / "photos"), "positive_label": "flower"},
        image={"size": 64},
        train={"max_steps": 3, "batch_size": 16},
        output=str(tmp_path / "run"),
    )
    assert config.model.name == "efficientnet-lite0"
    run = recipe.train(config, show_progress=False)
    # The pretrained features tell a temple's stonework from a flower's petals.
    assert run.metrics["baselines"]["embedding_logreg"]["accuracy"] > 0.9
    assert run.metrics["accuracy"] > 0.9 and run.metrics["n_eval"] == 16
    info = json.loads((run.folder / "adapter" / "classifier.json").read_text())
    assert "_conv_head" in info["lora_targets"]
    adapted = {n for n, _ in run.model.backbone.named_modules() if n.endswith("lora_A")}
    assert any("_blocks.15._project_conv" in n for n in adapted)
    assert not any("_blocks.4." in n or "depthwise" in n for n in adapted)
    paths = pd.read_csv(run.folder / "predictions.csv")["path"].tolist()
    reloaded = recipe.load(run.folder)
    np.testing.assert_allclose(reloaded.predict_proba(paths), run.predict_proba(paths), atol=0)
    # LoRA changed the backbone: with the adapter off, the features differ.
    batch = reloaded.inputs.collate(reloaded.inputs.encode(paths[:4]))
    with torch.no_grad():
        adapted = reloaded.model.embed(**batch)
        with reloaded.model.backbone.disable_adapter():
            frozen = reloaded.model.embed(**batch)
    assert not torch.allclose(adapted, frozen)


def test_lfw_benchmark_script_runs_on_a_stand_in_file(tmp_path):
    """The real-photo benchmark keeps working (here on random pixels shaped like the LFW file)."""
    import subprocess
    import sys

    np.save(tmp_path / "lfw.npy", np.random.default_rng(0).random((200, 25, 25)))
    output = tmp_path / "result.json"
    script = Path(__file__).parent.parent / "benchmarks" / "image_lfw_subset.py"
    subprocess.run(
        [sys.executable, str(script), "--npy", str(tmp_path / "lfw.npy"), "--seeds", "1"]
        + ["--image-size", "32", "--max-steps", "1", "--output", str(output)],
        check=True,
        capture_output=True,
    )
    result = json.loads(output.read_text())
    methods = [row["method"] for row in result["rows"]]
    assert methods == ["fine-tuned (LoRA)", "embedding_logreg", "pixel_logreg"]
    assert result["n_eval_per_seed"] == 40 and result["image_size"] == 32
