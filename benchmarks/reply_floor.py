"""Reply length floors (options.min_reply_share), chosen on validation messages only.

The fine-tuned replies are shorter than the references, and chrF weighs recall twice as much
as precision. A floor keeps each reply from ending before a share of the retrieved reply's
length in tokens. This script trains the reply task's default run once (the evaluation
subsample cut to `--eval-rows` messages, which the run decodes with the fine-tuned and the
untuned model; the validation messages are the same whatever that number), then decodes
the run's 27 validation messages again at each share and scores them beside both retrieval
baselines. The test messages are not read.

    python benchmarks/reply_floor.py --shares 0 0.6 0.8 1.0 \
        --output benchmarks/results/reply_floor.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.6, 0.8, 1.0])
    parser.add_argument("--eval-rows", type=int, default=27)
    parser.add_argument("--run", help="An existing reply run to reuse instead of training.")
    parser.add_argument("--quick", action="store_true", help="A smoke run (--quick sizes).")
    parser.add_argument("--scratch", default=str(ROOT / "runs" / "reply-floor"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/reply_floor.json"))
    args = parser.parse_args()

    from finetune.evaluation.reply_metrics import retrieve_tfidf
    from finetune.generation import load_generation_run
    from recipes.customer_service import recipe
    from recipes.customer_service_replies import split

    overrides = {"options": {"task": "reply", "eval_rows": args.eval_rows}}
    output = args.run or args.scratch
    config = recipe.config(quick=args.quick, **overrides, output=output, overwrite=True)
    started = time.perf_counter()
    if args.run is None:
        recipe.train(config, show_progress=False)
    run_seconds = time.perf_counter() - started
    train, validation, _ = split(config)
    loaded = load_generation_run(config.output)
    pairs = validation
    if loaded.redact:
        from finetune.data.pairs import redact_pairs

        pairs, train = redact_pairs(validation)[0], redact_pairs(train)[0]
    judge, keys = loaded.judge, ("rougeL", "chrf", "intent_accuracy")
    rows = {
        "retrieval_tfidf": retrieve_tfidf(train.messages, train.responses, pairs.messages),
        "retrieval_embedding": loaded.decode.retrieved.nearest(pairs.messages),
    }
    figures = {name: _figures(judge, texts, pairs, keys) for name, texts in rows.items()}
    for share in args.shares:
        loaded.decode.min_share = share
        out = loaded.decode(pairs.prompts)
        entry = _figures(judge, out.texts, pairs, keys)
        entry.update(
            characters=round(sum(map(len, out.texts)) / len(out.texts), 1),
            new_tokens=out.new_tokens,
            seconds=round(out.seconds, 1),
        )
        figures[f"model, min_reply_share={share}"] = entry
        print(share, entry, flush=True)
    for name, texts in rows.items():
        figures[name]["characters"] = round(sum(map(len, texts)) / len(texts), 1)
    reference = round(sum(map(len, pairs.responses)) / len(pairs), 1)
    result = {
        "split": f"validation ({len(pairs)} messages of the training pool; test not read)",
        "reference_characters": reference,
        "run": str(config.output),
        "train_and_run_seconds": round(run_seconds, 1),  # the run: training and its decoding
        "figures": figures,
    }
    Path(args.output).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))


def _figures(judge, texts: list[str], pairs, keys: tuple[str, ...]) -> dict:
    scored = judge.figures(texts, pairs)
    return {k: round(float(scored[k]), 4) for k in keys}


if __name__ == "__main__":
    main()
