"""The consensus retrieval baseline, sized on development messages, then on a run's own.

Development messages are Bitext training pairs that the default reply run neither trains on
nor validates on (4 per intent, drawn with a seed of their own): the number of candidates
was chosen on them, never on the test messages. For each, the run's fine-tuned model replies
(with its retrieved reply in the prompt, as served), and the consensus (finetune's
`modeling.retrieval.consensus`) chooses among the replies to the K nearest training
messages by the run's frozen encoder, with and without the model's reply among them. Then the
same on the run's own validation and test messages, judged as the run judges (the model's
figures are the run's).

    python benchmarks/reply_consensus.py RUN --output benchmarks/results/reply_consensus.json

RUN: a default reply run (`finetune customer-service train --task reply`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finetune.data.pairs import Pairs, redact_pairs
from finetune.evaluation.reply_metrics import retrieve_tfidf
from finetune.evaluation.text_metrics import chrf, rouge_l
from finetune.generation import LoadedGenerator, load_generation_run
from finetune.modeling.retrieval import consensus
from recipes.customer_service import recipe
from recipes.customer_service_replies import _sources, split, spread

DEV_SEED = 7  # the development draw's own seed (the run's splits use 42 to 44)


def development_pairs(n: int) -> tuple[Pairs, Pairs]:
    """(n stratified Bitext training pairs the default run never sees, its training pairs),
    both PII-redacted as the run redacts them."""
    config = recipe.config(options={"task": "reply"})
    train, validation, _ = split(config)
    pool, _ = _sources(config)
    seen = set(train.prompts) | set(validation.prompts)
    unseen = pool.take([i for i in range(len(pool)) if pool.prompts[i] not in seen])
    dev = unseen.take(spread(unseen.labels, n, DEV_SEED, len(unseen)))
    return redact_pairs(dev)[0], redact_pairs(train)[0]


def overlap(texts: list[str], references: list[str]) -> dict[str, float]:
    return {
        "chrf": round(chrf(texts, references), 4),
        "rougeL": round(rouge_l(texts, references), 4),
    }


def on_development(loaded: LoadedGenerator, n: int) -> dict[str, dict[str, float]]:
    dev, train = development_pairs(n)
    model = loaded.decode(dev.prompts).texts
    nearest = loaded.index.candidates(dev.messages, 5)
    tfidf = retrieve_tfidf(train.messages, train.responses, dev.messages)
    methods = {
        "model": model,
        "retrieval_embedding": [c[0] for c in nearest],
        "retrieval_tfidf": tfidf,
        "consensus_3": consensus([c[:3] for c in nearest]),
        "consensus_5": consensus(nearest),
        "consensus_model_and_5": consensus([[m, *c] for m, c in zip(model, nearest, strict=True)]),
        "consensus_model_embedding_tfidf": consensus(
            [[m, c[0], t] for m, c, t in zip(model, nearest, tfidf, strict=True)]
        ),
    }
    figures = {name: overlap(texts, dev.responses) for name, texts in methods.items()}
    picked = methods["consensus_model_and_5"]
    figures["consensus_model_and_5"]["picks_model"] = sum(
        p == m for p, m in zip(picked, model, strict=True)
    )
    return figures


def on_the_run(loaded: LoadedGenerator) -> dict[str, dict]:
    config = recipe.config(options={"task": "reply"})
    _, validation, evaluation = split(config)
    out = {}
    for name, pairs in (("validation", validation), ("evaluation", evaluation)):
        pairs = redact_pairs(pairs)[0]
        retrieved = loaded.index.served(pairs.messages)  # as the run computes them
        agreed, nearest = retrieved["retrieval_consensus"], retrieved["retrieval_embedding"]
        out[name] = {
            "n": len(pairs),
            **{method: loaded.judge.figures(texts, pairs) for method, texts in retrieved.items()},
            "consensus_is_nearest": sum(a == b for a, b in zip(agreed, nearest, strict=True)),
        }
    metrics = json.loads((loaded.folder / "metrics.json").read_text(encoding="utf-8"))
    out["run_validation"] = metrics["validation"]["figures"]
    out["run_evaluation"] = metrics["reply"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--messages", type=int, default=108, help="development messages")
    parser.add_argument("--output", type=Path)
    parser.add_argument(
        "--consensus-prompts",
        action="store_true",
        help="RUN is a run of benchmarks/reply_consensus_prompt.py: prompt it the same way",
    )
    args = parser.parse_args()
    if args.consensus_prompts:
        from reply_consensus_prompt import use_consensus_prompts

        use_consensus_prompts()
    loaded = load_generation_run(args.run, serve="model")  # once: the model, index and judge
    result = {"development": on_development(loaded, args.messages), "run": on_the_run(loaded)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
