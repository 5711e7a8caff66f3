"""Image files in, examples out: folders and CSVs of image paths, checked and decoded one way.

Every image the engine touches (training, prediction, baselines, report thumbnails) goes
through `open_rgb`: EXIF rotation applied, grayscale, palette, 16-bit and CMYK converted,
transparency flattened onto white, so a PNG with an alpha channel and the same picture as a
JPEG give the same pixels. Unreadable files (corrupt, truncated, empty, not an image) are
skipped and named in the report, or refused with `image.strict`.

Only PIL and numpy are imported at module level.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finetune.data.tables import Examples, read_table
from finetune.errors import UserError, first_line

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Folder names that mark a dataset's own split (train/ plus val/ or test/).
TRAIN_DIR, EVAL_DIRS = "train", ("test", "val")


class UnreadableImage(Exception):
    """A file that PIL cannot decode; the message says why."""


def open_rgb(path: str | Path, max_side: int | None = None) -> Image.Image:
    """The image at `path` as 8-bit RGB; with `max_side`, shrunk (never enlarged) so that its
    shorter side is at most that many pixels. Raises UnreadableImage."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            if max_side and image.format == "JPEG":
                # Decode at a reduced scale straight from the JPEG: much faster for big photos.
                image.draft("RGB", (max_side, max_side))
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        detail = first_line(error)
        if detail.startswith("cannot identify image file"):
            detail = "not an image format PIL can read"  # PIL's message repeats the path
        raise UnreadableImage(detail) from None
    if max_side and min(rgb.size) > max_side:
        scale = max_side / min(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return rgb


def _to_rgb(image: Image.Image) -> Image.Image:
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit or float grayscale: stretch to 8 bits instead of clipping at 255.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def readable(path: Path) -> str | None:
    """None if the image decodes, else why not (decoded small: cheap even for big JPEGs)."""
    if not path.is_file():
        return "file not found"
    try:
        open_rgb(path, max_side=64)
    except UnreadableImage as error:
        return str(error)
    return None


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive, sorted, hidden files and folders left out)."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _keep_readable(
    paths: list[Path], labels: list[str], root: Path, source: str, strict: bool
) -> Examples:
    kept_paths, kept_labels, skipped = [], [], []
    for path, label in zip(paths, labels or [""] * len(paths), strict=True):
        problem = readable(path)
        if problem is None:
            kept_paths.append(str(path))
            kept_labels.append(label)
            continue
        name = _display(path, root)
        if strict:
            raise UserError(
                f"{source}: cannot read image {name} ({problem}). Fix or remove it, or run "
                "without --strict to skip unreadable files."
            )
        skipped.append(name)
    if not kept_paths:
        raise UserError(
            f"{source}: none of its {len(paths)} image files could be read "
            f"(e.g. {skipped[0]}). Are they images?"
        )
    return Examples(kept_paths, kept_labels if labels else [], source, skipped=skipped)


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_folder(folder: Path, strict: bool, labelled: bool = True) -> Examples:
    """Image-folder layout: one sub-folder per class (its name is the label). Unlabelled: every
    image file under `folder`."""
    source = str(folder)
    if not labelled:
        paths = image_files(folder)
        if not paths:
            raise UserError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found.")
        return _keep_readable(paths, [], folder, source, strict)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise UserError(
            f"{folder}: image files directly in the folder ({', '.join(loose[:3])}); put each "
            "image in a sub-folder named after its class (e.g. cats/, dogs/)."
        )
    paths: list[Path] = []
    labels: list[str] = []
    for class_dir in classes:
        found = image_files(class_dir)
        paths += found
        labels += [class_dir.name] * len(found)
    if not paths:
        raise UserError(
            f"{folder}: no images found. Expected one sub-folder per class holding image "
            f"files ({', '.join(IMAGE_SUFFIXES)}), or a CSV of path,label."
        )
    return _keep_readable(paths, labels, folder, source, strict)


def read_csv(path: Path, path_column: str, label_column: str | None, strict: bool) -> Examples:
    """A CSV/JSONL/Parquet table with an image path column (relative to the table's folder,
    or absolute) and, when labelled, a label column."""
    from finetune.data.tables import examples_from_frame

    frame = read_table(path)
    table = examples_from_frame(frame, path_column, label_column, str(path))
    paths = [path.parent / text for text in table.texts]
    examples = _keep_readable(paths, table.labels, path.parent, str(path), strict)
    # The table's own rows that were kept, so predictions can be written beside them.
    kept = set(examples.texts)
    examples.features = frame[[str(p) in kept for p in paths]].reset_index(drop=True)
    return examples


def split_layout(path: Path) -> tuple[Path, list[Path]] | None:
    """(train/, the evaluation folders: test/ then val/) when the folder at `path` holds a
    dataset's own split rather than one sub-folder per class; else None."""
    splits = [path / name for name in EVAL_DIRS if (path / name).is_dir()]
    if path.is_dir() and (path / TRAIN_DIR).is_dir() and splits:
        return path / TRAIN_DIR, splits
    return None


def read_images(path: str | Path, path_column: str, label_column: str | None, strict: bool):
    """A folder in image-folder layout, or a table of image paths; see read_folder/read_csv.

    A folder holding a train/ and test/ split is refused when labels are read: its sub-folder
    names are split names, not classes (read_image_split reads it as the split it is)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"Data not found: {path}. Give an image folder or a CSV of path,label.")
    layout = split_layout(path) if label_column is not None else None
    if layout is not None:
        names = "/, ".join(p.name for p in [layout[0], *layout[1]])
        raise UserError(
            f"{path} holds a dataset split ({names}/), not one sub-folder per class; give one "
            f"part of it here, e.g. {layout[1][0]}."
        )
    if path.is_dir():
        return read_folder(path, strict, labelled=label_column is not None)
    return read_csv(path, path_column, label_column, strict)


def read_image_split(
    path: str | Path, path_column: str, label_column: str, strict: bool
) -> tuple[Examples, Examples | None]:
    """Like read_images, but a folder holding train/ and test/ (or val/) is the dataset's own
    split: train/ trains, test/ evaluates (val/ when there is no test/; with both, val/ joins
    the training rows, from which the engine holds out its own validation share)."""
    path = Path(path)
    layout = split_layout(path)
    if layout is None:
        return read_images(path, path_column, label_column, strict), None
    train_dir, splits = layout
    train = read_folder(train_dir, strict)
    evaluation = read_folder(splits[0], strict)
    for extra in splits[1:]:
        more = read_folder(extra, strict)
        train = Examples(
            train.texts + more.texts,
            train.labels + more.labels,
            f"{train.source} + {more.source}",
            skipped=train.skipped + more.skipped,
        )
    return train, evaluation


def pixel_vectors(paths: list[str], side: int) -> np.ndarray:
    """Each image squashed to side x side RGB, flattened to [0, 1] floats (a raw-pixel view)."""
    from PIL import Image

    rows = []
    for path in paths:
        image = open_rgb(path, max_side=side * 4).resize((side, side), Image.Resampling.BILINEAR)
        rows.append(np.asarray(image, dtype=np.float32).reshape(-1) / 255)
    return np.stack(rows)


# 16 x 16 x 3 = 768 values: about the size of an MNIST digit's own 28 x 28 = 784.
PIXEL_SIDE = 16


def plot_mistakes(mistakes: list[dict], path: Path) -> None:
    """A grid of thumbnails titled true -> predicted (probability)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(mistakes))
    rows = math.ceil(len(mistakes) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, mistake in zip(axes.flat, mistakes, strict=False):
        try:
            ax.imshow(open_rgb(mistake["path"], max_side=160))
        except UnreadableImage:
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
        ax.set_title(
            f"true {mistake['label']}\npredicted {mistake['predicted']} "
            f"({mistake['probability']:.2f})",
            fontsize=8,
        )
    fig.suptitle("Most confident mistakes (evaluation split)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
