"""Text metrics for generated responses, from the field's own packages.

ROUGE-L F (rouge-score, Google's reference implementation; mean over pairs) and chrF
(sacrebleu; one corpus-level score), both on a 0-1 scale here.
"""

from __future__ import annotations


def rouge_l(generated: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure of each generated text against its reference."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [
        scorer.score(reference, text)["rougeL"].fmeasure
        for text, reference in zip(generated, references, strict=True)
    ]
    return sum(scores) / len(scores) if scores else 0.0


def chrf(generated: list[str], references: list[str]) -> float:
    """Corpus chrF (sacrebleu's defaults), scaled to 0-1."""
    import sacrebleu

    return sacrebleu.corpus_chrf(generated, [references]).score / 100


def text_metrics(
    generated: list[str], references: list[str], new_tokens: int, seconds: float
) -> dict[str, float | int]:
    """The `generation` block of metrics.json."""
    return {
        "rougeL": rouge_l(generated, references),
        "chrf": chrf(generated, references),
        "tokens_per_second": new_tokens / seconds if seconds else 0.0,
        "n": len(generated),
    }
