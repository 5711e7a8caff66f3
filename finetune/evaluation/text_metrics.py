"""Text metrics for generated responses, from the field's own packages, and what they need
to know about scripts written without spaces.

ROUGE-L F (rouge-score, Google's reference implementation; mean over pairs) and chrF
(sacrebleu; one corpus-level score), both on a 0-1 scale here.
"""

from __future__ import annotations

import re

# Han ideographs (with extensions A and compatibility), kana and Hangul syllables: the letters
# of scripts written without spaces between words. (finetune/data/pii.py keeps its own copy:
# it is exported as a standalone file.)
CJK_LETTERS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CJK = re.compile(f"[{CJK_LETTERS}]")
CJK_SHARE = 0.5  # "mostly CJK": more than half of the letters
# rouge-score's own tokens (lower-cased runs of a-z and 0-9), plus each CJK letter as a token.
_ROUGE_TOKEN = re.compile(f"[a-z0-9]+|[{CJK_LETTERS}]")


def cjk_share(texts: list[str], limit: int = 5000) -> float:
    """The share of the letters in (up to `limit` of) these texts that are CJK characters."""
    sample = "".join(texts[:limit])
    letters = sum(ch.isalpha() for ch in sample)
    return len(_CJK.findall(sample)) / letters if letters else 0.0


class RougeTokenizer:
    """rouge-score's default tokenizer keeps only a-z and 0-9, so a Chinese reply has no tokens
    and scores 0 against anything. This one gives the same tokens for such text and makes each
    CJK character a token, as character-level ROUGE for Chinese does."""

    def tokenize(self, text: str) -> list[str]:
        return _ROUGE_TOKEN.findall(text.lower())


def rouge_l(generated: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure of each generated text against its reference."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizer())
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
