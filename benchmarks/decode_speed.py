"""Decoding speed of a finished reply run (`finetune customer-service train --task reply`).

    python benchmarks/decode_speed.py RUN_FOLDER                 # 16 evaluation messages
    python benchmarks/decode_speed.py RUN_FOLDER --compare       # and the autocast path
    python benchmarks/decode_speed.py RUN_FOLDER --batch-size 64 --untuned   # the untuned model
    python benchmarks/decode_speed.py RUN_FOLDER --before      # as replies were decoded before
    OMP_WAIT_POLICY=ACTIVE python benchmarks/decode_speed.py RUN_FOLDER
    OMP_WAIT_POLICY=PASSIVE python benchmarks/decode_speed.py RUN_FOLDER

Reloads the run, builds the prompts of the first N messages of its `predictions.csv` as the
run did (with their retrieved replies when it used them), then decodes them greedily in the
run's batches and prints new tokens, seconds, tokens/s, how many replies equal the run's
own, and their ROUGE-L, chrF and intent accuracy. Retrieval is outside the timing. Run it
with nothing else on the cores, and compare settings in the same session
(docs/benchmarks.md, "CPU threads and kernel caches").

`--compare` also decodes the same prompts the way replies were decoded before CPU decoding
copies (docs/benchmarks.md, "Decoding on CPU"): the trained model itself, its adapter
unfolded, its frozen weights cast to bf16 again at every token when the run trained in bf16;
it prints both and the ratio.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a reply run folder")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--compare", action="store_true", help="also the bf16 autocast path")
    parser.add_argument("--batch-size", type=int, help="replies per batch (default: the run's)")
    parser.add_argument("--untuned", action="store_true", help="the untuned model's replies")
    parser.add_argument(
        "--before", action="store_true",
        help="transformers' own cache and one round per batch (decoding before the growing "
        "cache and the rounds)",
    )  # fmt: skip
    args = parser.parse_args()

    import pandas as pd

    from finetune.generation import load_generation_run

    loaded = load_generation_run(args.run)
    table = pd.read_csv(f"{args.run}/predictions.csv", keep_default_na=False).head(args.prompts)
    decode, prompts = loaded.decode, table["prompt"].tolist()
    if decode.retrieved is not None:
        prompts, decode.retrieved = decode.retrieved.prompts(prompts, decode.system), None
    from finetune.data.pairs import Pairs

    pairs = Pairs(prompts, table["reference"].tolist(), labels=table["label"].tolist())
    decode.batch_size = args.batch_size or decode.batch_size
    if args.before:
        from finetune.modeling import generation

        generation.growing_cache = lambda config, length=0: None  # one round, own cache
    out = decode(prompts, untuned=args.untuned)
    column = "untuned" if args.untuned else "generated"
    figures = {"copy": timing(out, table[column], loaded.judge.figures(out.texts, pairs))}
    if args.compare:
        from finetune.modeling.generation import generate

        autocast = generate(
            decode.model, decode.tokenizer, prompts, decode.max_new_tokens,
            decode.batch_size, decode.bf16, system=decode.system,
        )  # fmt: skip
        figures["autocast"] = timing(
            autocast, table["generated"], loaded.judge.figures(autocast.texts, pairs)
        )
        figures["copy_over_autocast"] = round(
            figures["copy"]["tokens_per_second"] / figures["autocast"]["tokens_per_second"], 2
        )
    settings = {"batch_size": decode.batch_size, "untuned": args.untuned, "before": args.before}
    print(json.dumps({"prompts": len(prompts), **settings, **figures}))


def timing(out, run_texts, quality: dict) -> dict:
    """New tokens, seconds, tokens/s, how many replies equal the run's own, and their
    ROUGE-L, chrF and intent accuracy against the references."""
    return {
        "new_tokens": out.new_tokens,
        "seconds": round(out.seconds, 1),
        "tokens_per_second": round(out.new_tokens / out.seconds, 1),
        "same_as_run": sum(a == b for a, b in zip(out.texts, run_texts, strict=True)),
        **{k: round(quality[k], 4) for k in ("rougeL", "chrf", "intent_accuracy") if k in quality},
    }


if __name__ == "__main__":
    main()
