"""Writing files and folders all or nothing: a half-written one never looks finished.

Run folders, cross-validation summaries, exports and summary reports are filled under a
temporary sibling name and renamed into place only once complete (`staged`); single files
(predictions, metrics, data cards) the same way (`atomic`). `output_folder` names a run's
folder and refuses to replace one without `--overwrite`.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from finetune.errors import UserError


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A temporary sibling folder to fill; renamed to `folder` only if the block succeeds.

    A run killed or failing half-way leaves no folder that looks finished, and an existing
    folder (with --overwrite) is replaced only once the new one is complete.
    """
    refuse_file(folder)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(
                f"No space left on the device while writing {folder}; nothing was written "
                f"(and {folder} was left as it was). Free some space and rerun with --resume."
            ) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if folder.exists():
        old = folder.with_name(folder.name + f".old-{os.getpid()}")
        folder.rename(old)
    tmp.rename(folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_texts(folder: Path, texts: dict[str, str]) -> None:
    """Each text as a UTF-8 file of `folder`, named by its key (whatever the locale's
    encoding: a Chinese label or reply must read back on any machine)."""
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """A temporary sibling to write; it replaces `path` only once written completely."""
    refuse_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def output_folder(output: str | None, name: str, overwrite: bool) -> Path:
    """`output`, else runs/<name>-<timestamp>; an existing non-empty folder only with
    `overwrite` (config.output, config.recipe, config.overwrite)."""
    folder = Path(output) if output else Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    check_output_folder(folder, overwrite)
    return folder


def check_output_folder(folder: Path, overwrite: bool) -> None:
    """One line unless `folder` may be written: new or empty, or any folder with `overwrite`;
    never a file."""
    refuse_file(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise UserError(
            f"Output folder {folder} already exists; pass --overwrite or a new --output."
        )


def refuse_file(folder: Path) -> None:
    """One line when a folder to write is an existing file: never replaced, --overwrite or not."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"Output {folder} is a file, not a folder; pass another --output.")


def refuse_folder(path: Path) -> None:
    """One line when a file to write is an existing folder (checked again by `atomic`; a
    command checks first too, so that no work is lost)."""
    if path.is_dir():
        raise UserError(f"Output {path} is a folder, not a file; pass a file name.")
