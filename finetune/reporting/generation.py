"""The generation run's report.md: the metrics table and a few side-by-side examples."""

from __future__ import annotations

from typing import Any

from finetune.markdown import figure, table


def _cell(text: str, limit: int = 200) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def generation_report(
    metrics: dict[str, Any], prompts: list[str], references: list[str], generated: list[str]
) -> str:
    """Markdown: what was measured on the evaluation pairs, then up to 5 examples."""
    figures = metrics["generation"]
    rows = [
        ["ROUGE-L F", figure(figures["rougeL"])],
        ["chrF", figure(figures["chrf"])],
        ["new tokens / s", figure(figures["tokens_per_second"])],
        ["evaluation pairs", figure(figures["n"])],
    ]
    examples = [
        [_cell(p), _cell(r), _cell(g)]
        for p, r, g in list(zip(prompts, references, generated, strict=True))[:5]
    ]
    train = metrics["train"]
    return (
        "\n\n".join(
            [
                "# Generation run",
                f"Model `{metrics['model']}`, {train['steps']} steps, kept epoch "
                f"{figure(train['best_epoch'])}.",
                "## Metrics (evaluation pairs)",
                table(["metric", "value"], rows),
                "## Examples",
                table(["prompt", "reference", "generated"], examples),
            ]
        )
        + "\n"
    )
