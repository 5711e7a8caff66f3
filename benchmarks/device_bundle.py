"""What `benchmarks/gpu_check.sh` needs on a bare GPU machine that reaches no package index.

    python benchmarks/device_bundle.py            # writes .device_bundle/ (git-ignored)

The GPU machine these checks are meant for has Python 3.12 with a CUDA build of torch,
transformers, peft, accelerate, pandas and scikit-learn, but not this project's other needs,
and nothing can be fetched there; what travels with the working tree is at most 64 MiB. So
this script, run where the package index is reachable, writes into `.device_bundle/`:

- `wheels/`: this project (built from the checkout) and the packages it pins, for CPython
  3.12 on manylinux x86-64, at this project's versions, dependencies not on the machine too.
  bitsandbytes keeps its CUDA 13 libraries only (the machine's torch is a CUDA 13 build).
- `models/NAME/`: each benchmarked model's config and tokenizer files, no weights
  (tokenizer.json gzipped); `benchmarks/random_weights.py` gives them seeded random weights
  there. The bundle is refused past its budget, so that the working tree still travels.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / ".device_bundle"
# The packages this project pins (pyproject.toml) and those they need, each either absent
# from the GPU machine's image or there at another version (transformers checks regex's at
# import); rouge-score ships no wheel, so it is built here.
WHEELS = (
    *("transformers", "peft", "datasets", "bitsandbytes", "scikit-learn", "pandas"),
    *("pydantic", "pydantic-core", "annotated-types", "typing-inspection"),
    *("evaluate", "rouge-score", "nltk", "dill", "multiprocess", "regex", "fsspec"),
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64")
PYTHON = "3.12"
# bitsandbytes' libraries kept: the CPU fallback and the CUDA 13 builds.
KEEP_LIBRARY = re.compile(r"libbitsandbytes_(cpu|cuda13\d)\.so$")
# The models gpu_check.sh benchmarks (names the engine resolves, or a folder).
MODELS = ("minilm", "smollm2-135m", "qwen2.5-0.5b")
WEIGHTS = re.compile(r"\.(safetensors|bin|pt|pth|gguf|onnx|h5|msgpack|ot|npy)$")
BUDGET_MB = 62.0  # with the working tree that travels beside it; the tool carries 64 MiB


def wanted() -> list[str]:
    """`name==version` for every wheel the bundle holds besides this project's own, at the
    versions installed here (pyproject.toml's pins)."""
    return [f"{name}=={metadata.version(name)}" for name in WHEELS]


def fetch(requirement: str, folder: Path) -> None:
    """The requirement's wheel for the GPU machine (built here when it ships none)."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder)]
    target = ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp"]
    done = subprocess.run([*download, *target, *platforms, requirement], capture_output=True)
    if done.returncode != 0:  # an sdist only (pure Python): build the wheel here
        build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder)]
        subprocess.run([*build, requirement], check=True)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def slim_wheel(wheel: Path, keep: re.Pattern[str] = KEEP_LIBRARY) -> int:
    """Drop the wheel's shared libraries that `keep` does not match, in place (its RECORD
    rewritten to match); the bytes saved."""
    before = wheel.stat().st_size
    slimmed = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slimmed, "w") as out:
        kept = [
            info
            for info in source.infolist()
            if not info.filename.endswith(".so") or keep.search(info.filename)
        ]
        record = next(i.filename for i in kept if i.filename.endswith(".dist-info/RECORD"))
        lines = []
        for info in kept:
            if info.filename == record:
                continue
            data = source.read(info)
            out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            lines.append(_record_line(info.filename, data))
        out.writestr(record, "\n".join([*lines, f"{record},,"]) + "\n")
    slimmed.replace(wheel)
    return before - wheel.stat().st_size


def pack_model_files(source: Path, target: Path) -> None:
    """A model folder's config and tokenizer files (no weights) into `target`, tokenizer.json
    gzipped (it is most of a tokenizer's size)."""
    for path in sorted(source.rglob("*")):
        if path.is_dir() or WEIGHTS.search(path.name):
            continue
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "tokenizer.json":
            with open(path, "rb") as plain, gzip.GzipFile(f"{out}.gz", "wb", mtime=0) as packed:
                shutil.copyfileobj(plain, packed)
        else:
            shutil.copyfile(path, out)


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def working_tree_mb() -> float:
    """What travels besides the bundle: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    paths = [ROOT / name.decode() for name in listed if name]
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


def build(output: Path, models: tuple[str, ...], budget_mb: float) -> float:
    """The bundle in `output` (replaced); its size in MB."""
    from finetune.modeling.models import resolve_model_path

    shutil.rmtree(output, ignore_errors=True)
    wheels = output / "wheels"
    wheels.mkdir(parents=True)
    for requirement in wanted():
        fetch(requirement, wheels)
    for wheel in wheels.glob("bitsandbytes-*.whl"):
        slim_wheel(wheel)
    build_own = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels)]
    subprocess.run([*build_own, str(ROOT)], check=True)
    for name in models:
        pack_model_files(Path(resolve_model_path(name)), output / "models" / name)
    total, tree = size_mb(output), working_tree_mb()
    if total + tree > budget_mb:
        raise SystemExit(
            f"{output}: {total:.1f} MB and the working tree {tree:.1f} MB, over the "
            f"{budget_mb:.0f} MB that may travel; drop a model or a wheel the GPU machine has."
        )
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=BUNDLE)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--budget-mb", type=float, default=BUDGET_MB)
    args = parser.parse_args()
    total = build(args.output, tuple(args.models), args.budget_mb)
    for path in sorted(args.output.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size / 2**20:8.2f} MB  {path.relative_to(args.output)}")
    print(f"{total:.1f} MB in {args.output}")


if __name__ == "__main__":
    main()
