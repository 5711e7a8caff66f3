"""The default reply run with the consensus reply in each prompt instead of the nearest one.

A measurement, not an option: training pairs and evaluation prompts carry the consensus of
the replies to the 5 nearest *other* training messages (`modeling.retrieval.consensus`), in place
of the nearest reply; everything else is the default run (`finetune customer-service train
--task reply`), whose baselines are unchanged. Compare the run's validation figures, and its
replies to the development messages of benchmarks/reply_consensus.py, with the default run's.

    python benchmarks/reply_consensus_prompt.py --output runs/reply-consensus-prompt
    python benchmarks/reply_consensus.py runs/reply-consensus-prompt --consensus-prompts
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from finetune.data.pairs import Pairs, prompt_text
from finetune.modeling import generation
from finetune.modeling.retrieval import CONSENSUS_CANDIDATES, consensus
from recipes.customer_service import recipe


def with_consensus_replies(
    self: generation.RetrievedReplies, prompts: list[Any], system: str | None
) -> tuple[list[Any], list[str]]:
    """`with_replies`, with the consensus of the nearest replies in each prompt."""
    messages = [prompt_text(p) for p in prompts]
    replies = consensus(self.candidates(messages, CONSENSUS_CANDIDATES)) if prompts else []
    shown = [
        generation.with_retrieved_reply(p, r, system) for p, r in zip(prompts, replies, strict=True)
    ]
    return shown, replies


def consensus_training_pairs(
    self: generation.RetrievedReplies, train: Pairs, system: str | None
) -> Pairs:
    """`training_pairs`, with the consensus of the replies to the nearest *other* training
    messages (leave one out, as the default)."""
    scores = self.vectors @ self.vectors.T
    np.fill_diagonal(scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :CONSENSUS_CANDIDATES]
    replies = consensus([[self.replies[i] for i in row] for row in order])
    prompts = [
        generation.with_retrieved_reply(p, r, system)
        for p, r in zip(train.prompts, replies, strict=True)
    ]
    return Pairs(prompts, train.responses, train.name, train.labels)


def use_consensus_prompts() -> None:
    """From now on, prompts and training pairs carry the consensus reply (this process)."""
    generation.RetrievedReplies.with_replies = with_consensus_replies
    generation.RetrievedReplies.training_pairs = consensus_training_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    use_consensus_prompts()
    config = recipe.config(options={"task": "reply"}, output=args.output)
    config.train.seed = args.seed
    run = recipe.train(config)
    print(run.folder)


if __name__ == "__main__":
    main()
