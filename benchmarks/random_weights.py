"""A model folder with the architecture of a real one and seeded random weights.

    python benchmarks/random_weights.py CONFIG_DIR OUT_DIR [--seed 0]

CONFIG_DIR holds a model's config.json and tokenizer files, without weights (what
`benchmarks/device_bundle.py` packs; a gzipped tokenizer.json is unpacked). OUT_DIR gets the
same files plus random weights (`from_config`, the model's own initialisation, seeded) as
safetensors, so any recipe loads it like the real model.

Why: a GPU machine with no package index cannot receive the real weights (the device tool
carries 64 MiB), and peak memory and tokens/s depend on the architecture, the sequence lengths
and the batch, not on the weights' values. Quality figures of such a folder mean nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path


def copy_config_files(source: Path, target: Path) -> None:
    """Every file and sub-folder of `source` into `target`, `*.gz` unpacked."""
    for path in source.rglob("*"):
        if path.is_dir():
            continue
        relative = path.relative_to(source)
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as packed, open(out.with_suffix(""), "wb") as plain:
                shutil.copyfileobj(packed, plain)
        else:
            shutil.copyfile(path, out)


def model_class(config) -> type:
    """The class the folder's config names (a causal LM, an encoder, ...), from transformers."""
    import transformers

    for name in config.architectures or []:
        found = getattr(transformers, name, None)
        if found is not None:
            return found
    return transformers.AutoModel


def write_random_model(source: Path, target: Path, seed: int = 0) -> Path:
    """`target` as a loadable model folder: `source`'s files and seeded random weights."""
    import torch
    from transformers import AutoConfig

    if not (source / "config.json").is_file():
        raise SystemExit(f"{source}: no config.json; pass a model folder's config and tokenizer.")
    target.mkdir(parents=True, exist_ok=True)
    copy_config_files(source, target)
    config = AutoConfig.from_pretrained(target)
    torch.manual_seed(seed)
    model = model_class(config)._from_config(config)
    model.save_pretrained(target, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    (target / "random_weights.json").write_text(
        json.dumps({"source": str(source), "seed": seed, "parameters": params}, indent=2),
        encoding="utf-8",
    )
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = write_random_model(args.source, args.target, args.seed)
    saved = json.loads((folder / "random_weights.json").read_text(encoding="utf-8"))
    print(f"{folder}: {saved['parameters']:,}")


if __name__ == "__main__":
    main()
