"""The generation run's report.md: the verdict first, the table of methods, throughput and
ten side-by-side examples (message, reference, fine-tuned, retrieval)."""

from __future__ import annotations

from typing import Any

from finetune.evaluation.selection import MARGIN
from finetune.markdown import figure, table
from finetune.modeling.retrieval import SERVABLE, SERVED_AS

COLUMNS = {
    "rougeL": "ROUGE-L F",
    "chrf": "chrF",
    "intent_accuracy": "intent accuracy",
    "intent_recall": "intent recall (macro)",
    "intent_f1": "intent F1 (macro)",
    "placeholder_fidelity": "placeholder fidelity",
    "pii_leaks": "PII leaks",
    "foreign_numbers": "foreign numbers",
}
METHODS = {
    "model": "fine-tuned model",
    "untuned": "untuned model (same prompt)",
    "retrieval_tfidf": "retrieval (TF-IDF)",
    "retrieval_embedding": "retrieval (frozen {encoder})",
    "retrieval_consensus": "retrieval (consensus of {encoder}'s nearest)",
}
EXAMPLES = 10


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _epoch(value: float | None) -> str:
    """An epoch as counted (3, or 1.5 when validation ran mid-epoch), not 3.000."""
    return figure(value) if value is None else f"{value:g}"


def _redaction(counts: dict[str, int] | None) -> str:
    if counts is None:
        return " No PII redaction (data.redact_pii is off)."
    found = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "nothing found"
    return f" PII redacted in messages and replies before training: {found}."


def served(metrics: dict[str, Any]) -> str:
    """The method a run serves (runs from before delivery, or without validation: the model)."""
    return (metrics.get("delivered") or {}).get("name", "model")


def verdict_lines(metrics: dict[str, Any]) -> list[str]:
    """The run's first lines: whether the tuned model beats retrieval on validation rows, and
    what the run serves."""
    checked = metrics.get("validation")
    if not checked:
        return []
    losses, n = checked["model_loses_to"], checked["n"]
    if not losses:
        return [
            f"The fine-tuned model beats the retrieval baselines on ROUGE-L and chrF on the "
            f"validation rows ({n} messages); the run serves it."
        ]
    lost = (
        f"**The fine-tuned model loses to retrieval on the validation rows** ({n} messages: "
        f"lower {', '.join(losses)})."
    )
    name, best = served(metrics), (metrics.get("delivered") or {}).get("best", "model")
    if name == "model" and best != "model":
        return [
            f"{lost} The run serves the fine-tuned model as asked (eval.deliver finetuned), "
            f"although {method_name(best, metrics)} beats it on both ROUGE-L and chrF there."
        ]
    if name != "model":
        return [
            f"{lost} The run serves {method_name(name, metrics)} instead, which beats it on "
            f"both ROUGE-L and chrF there by more than {MARGIN}: `predict`, `chat` and the "
            f"export's `reply.py` answer with {SERVED_AS[name]}. The fine-tuned model's "
            "figures are below for comparison."
        ]
    from finetune.evaluation.reply_metrics import beats_on_both

    figures = checked.get("figures", {})
    servable = [f"`{method_name(n, metrics)}`" for n in SERVABLE if n in figures]
    beaten_by = [
        f"`{method_name(name, metrics)}`"
        for name, rival in figures.items()
        if name != "model" and name not in SERVABLE and beats_on_both(rival, figures["model"])
    ]
    verb, them = ("beats", "it") if len(beaten_by) == 1 else ("beat", "them")
    unserved = (
        f" {' and '.join(beaten_by)} {verb} it on both there, but runs do not serve {them}."
        if beaten_by
        else ""
    )
    return [
        f"{lost} The run still serves the fine-tuned model: no retrieval it can serve "
        f"({', '.join(servable) or 'none kept'}) beats it on both ROUGE-L and chrF there by "
        f"more than {MARGIN}.{unserved}"
    ]


def serving_note(metrics: dict[str, Any], serve: str = "model") -> str | None:
    """What serving a run's replies says first (predict, chat, an export's reply.py) when
    `serve` is not simply the better method on the validation rows: retrieval served in the
    model's place, or the model served although retrieval beat it on some figure. Never
    silently."""
    checked = metrics.get("validation")
    if not checked or not checked["model_loses_to"]:
        return None
    lost = (
        f"this run's fine-tuned model loses to retrieval on its {checked['n']} validation "
        f"messages (lower {', '.join(checked['model_loses_to'])})"
    )
    if serve != "model":
        return (
            f"Note: {lost}; the replies served are {method_name(serve, metrics)}'s: "
            f"{SERVED_AS[serve]} (report.md)."
        )
    return f"Note: {lost}; its replies are served as asked (report.md)."


def method_name(name: str, metrics: dict[str, Any]) -> str:
    """How the report names a method (the retrieval encoder by its name)."""
    encoder = metrics.get("retrieval_model", "minilm")  # runs before the option: MiniLM
    return METHODS.get(name, name).format(encoder=encoder)


def _reference_intents(figures: dict[str, float] | None) -> str:
    """How the classifier labels the reference replies: the most intent consistency can say."""
    if not figures:
        return ""
    return (
        f" On the reference replies themselves it scores accuracy "
        f"{figure(figures['intent_accuracy'])} (macro F1 {figure(figures['intent_f1'])}): the "
        "ceiling of these figures, so a method's gap to it is partly the classifier's error."
    )


def judge_note(metrics: dict[str, Any]) -> str:
    """Where the intent figures still favour retrieval: intents whose training replies the
    judge labels with the classifier fitted on them ("" when there are none)."""
    seen = metrics.get("judge_in_sample") or {}
    intents = seen.get("intents") or []
    if not intents:
        return ""
    named = ", ".join(intents[:5]) + (", ..." if len(intents) > 5 else "")
    return (
        f"Retrieval's intent figures are favoured on {len(intents)} of {seen['of']} intents "
        f"({named}): they have too few training replies to hold one out, so a retrieved reply "
        "of theirs is labelled by the classifier fitted on it. More training pairs per intent "
        "remove this."
    )


def _prompt_lines(metrics: dict[str, Any]) -> list[str]:
    if not metrics.get("retrieved_reply"):
        return []
    return [
        "Retrieval-augmented prompts: each prompt (the fine-tuned and the untuned model's) "
        "carried the reply to its most similar training message, the one "
        f"`{method_name('retrieval_embedding', metrics)}` serves as it is; the fine-tuned "
        "model learned to adapt it."
    ]


def methods_table(metrics: dict[str, Any]) -> list[list[str]]:
    """One row per method: its name (marked when the run serves it), then COLUMNS' figures."""
    serves = served(metrics) if "delivered" in metrics else None
    return [
        [
            method_name(name, metrics) + (" (served)" if name == serves else ""),
            *(figure(figures.get(key)) for key in COLUMNS),  # older runs lack some
        ]
        for name, figures in metrics["reply"].items()
    ]


def generation_report(
    metrics: dict[str, Any],
    prompts: list[str],
    references: list[str],
    generated: dict[str, list[str]] | list[str],
) -> str:
    """Markdown: verdict, methods on the evaluation pairs, throughput, then examples."""
    texts = generated if isinstance(generated, dict) else {"model": generated}
    train, gen = metrics["train"], metrics["generation"]
    rows = [
        ["training samples / s", figure(train.get("samples_per_second"))],
        ["training tokens / s (prompt and reply)", figure(train.get("tokens_per_second"))],
        ["training seconds", figure(train.get("train_seconds"))],
        [
            "generation: new tokens / s (fine-tuned model, batched greedy)",
            figure(gen["tokens_per_second"]),
        ],
    ]
    order = ("retrieval_tfidf", "retrieval_embedding")
    if metrics.get("retrieved_reply"):  # show the reply the model was given
        order = order[::-1]
    retrieval = next((k for k in order if k in texts), None)
    shown = ["model", *([retrieval] if retrieval else [])]
    examples = [
        [_cell(prompts[i]), _cell(references[i]), *(_cell(texts[m][i]) for m in shown)]
        for i in range(min(EXAMPLES, len(prompts)))
    ]
    sections = [
        "# Generation run",
        *verdict_lines(metrics),
        f"Model `{metrics['model']}`, {train['steps']} steps, kept epoch "
        f"{_epoch(train['best_epoch'])}; {gen['n']} evaluation messages."
        + _redaction(metrics.get("pii_redacted")),
        *_prompt_lines(metrics),
        *metrics.get("notes", []),
        "## Methods (evaluation messages)",
        table(["method", *COLUMNS.values()], methods_table(metrics)),
        "Intent figures: a reply classifier (TF-IDF + logistic regression) fitted on the "
        "training replies labels each reply (a training reply itself, as retrieval serves "
        "it, by the classifier of the fold that left it out); compared with the message's "
        "true intent."
        + _reference_intents(metrics.get("reference_intents"))
        + " Placeholder fidelity: share of replies with exactly their reference's `{{...}}` "
        "placeholders. PII leaks: e-mails, phone and card numbers found in the replies "
        "as generated. Foreign numbers: numbers of 5 digits or more in the replies that their "
        "message did not give (another customer's order number, in a training reply). "
        "`predict`, `chat` and the export's `reply.py` replace both before serving when the "
        "run redacts PII (data.redact_pii).",
        *filter(None, [judge_note(metrics)]),
        "## Throughput",
        table(["figure", "value"], rows),
        "## Examples",
        table(
            ["message", "reference", *(method_name(m, metrics) for m in shown)],
            examples,
        ),
    ]
    return "\n\n".join(sections) + "\n"
