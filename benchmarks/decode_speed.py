"""Decoding speed of a finished reply run (`finetune customer-service train --task reply`).

    python benchmarks/decode_speed.py RUN_FOLDER                 # 16 evaluation messages
    OMP_WAIT_POLICY=ACTIVE python benchmarks/decode_speed.py RUN_FOLDER
    OMP_WAIT_POLICY=PASSIVE python benchmarks/decode_speed.py RUN_FOLDER

Reloads the run, builds the prompts of the first N messages of its `predictions.csv` as the
run did (with their retrieved replies when it used them), then decodes them greedily in the
run's batches and prints new tokens, seconds, tokens/s and how many replies equal the run's
own. Retrieval is outside the timing. Run it with nothing else on the cores, and compare
settings in the same session (docs/benchmarks.md, "CPU threads and kernel caches").
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a reply run folder")
    parser.add_argument("--prompts", type=int, default=16)
    args = parser.parse_args()

    import pandas as pd

    from finetune.generation import load_generation_run

    loaded = load_generation_run(args.run)
    table = pd.read_csv(f"{args.run}/predictions.csv", keep_default_na=False).head(args.prompts)
    decode, prompts = loaded.decode, table["prompt"].tolist()
    if decode.retrieved is not None:
        prompts, decode.retrieved = decode.retrieved.prompts(prompts, decode.system), None
    out = decode(prompts)
    same = sum(a == b for a, b in zip(out.texts, table["generated"], strict=True))
    print(
        json.dumps(
            {
                "prompts": len(prompts),
                "new_tokens": out.new_tokens,
                "seconds": round(out.seconds, 1),
                "tokens_per_second": round(out.new_tokens / out.seconds, 1),
                "same_as_run": same,
            }
        )
    )


if __name__ == "__main__":
    main()
