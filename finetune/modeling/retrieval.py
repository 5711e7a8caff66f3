"""What a reply run can serve in its fine-tuned model's place: the retrieval baselines from the
index the run keeps (their names in metrics.json, what each answers with) and the consensus
choice among retrieved replies. No torch here, so reports and notes read it.
"""

from __future__ import annotations

import numpy as np

# The baselines a reply run can serve instead of its model (their names in metrics.json), both
# from the index the run keeps (vectors, replies, encoder): the nearest training message's
# reply, and the consensus of the nearest few. TF-IDF retrieval is measured, never served.
SERVABLE = ("retrieval_embedding", "retrieval_consensus")
# Replies the consensus chooses among (measured: docs/recipes/customer-service.md, "A stronger
# retrieval baseline").
CONSENSUS_CANDIDATES = 5
# What a served retrieval answers with, as notes and the export's README say it.
SERVED_AS = {
    "retrieval_embedding": "the reply to the most similar training message",
    "retrieval_consensus": f"the reply, among those to the {CONSENSUS_CANDIDATES} most similar "
    "training messages, most like the others",
}


def consensus(candidates: list[list[str]]) -> list[str]:
    """Of each list of candidate replies, the one most like the others: the highest total chrF
    against them (a minimum-Bayes-risk choice, with the others as likely references), the
    first on a tie. Replies to similar messages that agree are what such a message most often
    gets; one that stands apart is passed over. (The export's reply.py runs this source.)"""
    import sacrebleu

    chosen = []
    for replies in candidates:
        totals = [
            sum(
                sacrebleu.corpus_chrf([reply], [[other]]).score / 100
                for j, other in enumerate(replies)
                if j != i
            )
            for i, reply in enumerate(replies)
        ]
        chosen.append(replies[int(np.argmax(totals))])
    return chosen
