"""Prompt/response pairs: the examples of the generation task.

Kept apart from `Examples` (classification: texts and labels): a pair's "label" is a text the
model writes, scored with text metrics rather than class probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finetune.errors import UserError


@dataclass
class Pairs:
    """Prompts (the user turn) and their reference responses (the assistant turn)."""

    prompts: list[str]
    responses: list[str]
    name: str = "pairs"

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.responses):
            raise UserError(
                f"{self.name}: {len(self.prompts)} prompts but {len(self.responses)} responses; "
                "give one response per prompt."
            )

    def __len__(self) -> int:
        return len(self.prompts)

    def head(self, n: int) -> Pairs:
        return Pairs(self.prompts[:n], self.responses[:n], self.name)


def read_pairs(path: Path, prompt: str = "prompt", response: str = "response") -> Pairs:
    """Pairs from a CSV file's `prompt` and `response` columns (empty cells refused)."""
    import pandas as pd

    table = pd.read_csv(path)
    for column in (prompt, response):
        if column not in table.columns:
            raise UserError(
                f"{path}: no column '{column}' (columns: {', '.join(map(str, table.columns))}). "
                "Name the prompt and response columns."
            )
    for column in (prompt, response):
        empty = table[column].isna() | (table[column].astype(str).str.strip() == "")
        if empty.any():
            row = int(empty.to_numpy().nonzero()[0][0]) + 2  # +1 header, +1 one-based
            raise UserError(f"{path}, line {row}: column '{column}' is empty. Fill it or drop it.")
    prompts = table[prompt].astype(str).tolist()
    return Pairs(prompts, table[response].astype(str).tolist(), path.name)
