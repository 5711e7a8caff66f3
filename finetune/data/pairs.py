"""Prompt/response pairs: the examples of the generation task, and the readers of users' files.

Kept apart from `Examples` (classification: texts and labels): a pair's "label" is a text the
model writes, scored with text metrics rather than class probabilities. A prompt is either one
message (a string: the user turn) or a conversation so far (a list of `{"role", "content"}`
turns ending with the user's); the response is the assistant turn that follows.

Users' files:
- a table (CSV, TSV, JSONL or Parquet) with a message column and a reply column
  (`read_pairs(path, prompt="message", response="reply")`), optionally a label column (e.g.
  the message's intent, for intent-consistency metrics);
- JSONL conversations in the common `messages` format, one conversation per line:
  `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`. Every
  assistant turn becomes one pair whose prompt is the conversation before it, so the model
  learns each reply in its context; a conversation must end with an assistant turn.
Bad input is refused in one line naming the file and the line or row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from finetune.data import pii
from finetune.data.tables import check_file, read_table
from finetune.errors import UserError

Turn = dict[str, str]
Prompt = str | list[Turn]
ROLES = ("system", "user", "assistant")


@dataclass
class Pairs:
    """Prompts (the user turn, or the conversation so far) and their reference responses,
    with an optional label per pair (e.g. the message's intent)."""

    prompts: list[Prompt]
    responses: list[str]
    name: str = "pairs"
    labels: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.responses):
            raise UserError(
                f"{self.name}: {len(self.prompts)} prompts but {len(self.responses)} responses; "
                "give one response per prompt."
            )
        if self.labels is not None and len(self.labels) != len(self.prompts):
            raise UserError(f"{self.name}: {len(self.labels)} labels for {len(self)} pairs.")

    def __len__(self) -> int:
        return len(self.prompts)

    def head(self, n: int) -> Pairs:
        return self.take(list(range(min(n, len(self)))))

    def take(self, rows: list[int]) -> Pairs:
        """The pairs at `rows`, in that order."""
        labels = None if self.labels is None else [self.labels[i] for i in rows]
        return Pairs(
            [self.prompts[i] for i in rows], [self.responses[i] for i in rows], self.name, labels
        )

    @property
    def messages(self) -> list[str]:
        """Each prompt as one text: the last user turn of a conversation (what retrieval
        matches and what tables show)."""
        return [prompt_text(p) for p in self.prompts]


def prompt_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return next((t["content"] for t in reversed(prompt) if t["role"] == "user"), "")


def conversation_text(prompt: Prompt) -> str:
    """All a prompt's text, every turn's: what a reply to it may repeat (a number the
    customer gave)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(turn["content"] for turn in prompt)


def read_pairs(
    path: str | Path, prompt: str = "prompt", response: str = "response", label: str | None = None
) -> Pairs:
    """Pairs from a table's `prompt` and `response` columns (and `label`, when the table has
    that column), or from a JSONL file of `messages` conversations."""
    path = Path(path)
    if check_file(path) == "jsonl" and _is_conversations(path):
        return read_conversations(path)
    table = read_table(path)
    columns = [str(c) for c in table.columns]
    for column, flag in ((prompt, "--prompt-column"), (response, "--response-column")):
        if column not in columns:
            raise UserError(
                f"{path}: no column '{column}' (columns: {', '.join(columns)}). "
                f"Name it with {flag}."
            )
    first = 2 if check_file(path) in ("csv", "tsv") else 1  # CSV: line numbers after the header
    where = "line" if first == 2 else "row"
    for column in (prompt, response):
        empty = table[column].isna() | (table[column].astype(str).str.strip() == "")
        if empty.any():
            row = int(empty.to_numpy().nonzero()[0][0]) + first
            raise UserError(
                f"{path}, {where} {row}: column '{column}' is empty. Fill it or drop it."
            )
    labels = None
    if label is not None and label in columns:
        labels = table[label].astype(str).tolist()
    prompts: list[Prompt] = table[prompt].astype(str).tolist()
    return Pairs(prompts, table[response].astype(str).tolist(), path.name, labels)


def _is_conversations(path: Path) -> bool:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return False  # the table reader gives the parse error
                return isinstance(record, dict) and "messages" in record
    return False


def read_conversations(path: str | Path) -> Pairs:
    """One pair per assistant turn of each `{"messages": [...]}` line."""
    path = Path(path)
    prompts: list[Prompt] = []
    responses: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            turns = _conversation(path, number, line)
            for position, turn in enumerate(turns):
                if turn["role"] == "assistant" and position > 0:
                    prompts.append(turns[:position])
                    responses.append(turn["content"])
    if not prompts:
        raise UserError(f"{path}: no conversations in it.")
    return Pairs(prompts, responses, path.name)


def _conversation(path: Path, number: int, line: str) -> list[Turn]:
    where = f"{path}, line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not valid JSON ({error.msg}).") from None
    turns = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(turns, list) or not turns:
        raise UserError(f'{where}: no "messages" list; write {{"messages": [{{"role": ...}}]}}.')
    checked: list[Turn] = []
    for index, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise UserError(f'{where}, message {index}: needs "role" and "content".')
        if turn["role"] not in ROLES:
            raise UserError(
                f"{where}, message {index}: unknown role '{turn['role']}' (use {', '.join(ROLES)})."
            )
        if not isinstance(turn["content"], str) or not turn["content"].strip():
            raise UserError(f"{where}, message {index}: empty {turn['role']} content.")
        checked.append({"role": turn["role"], "content": turn["content"]})
    if checked[-1]["role"] != "assistant":
        raise UserError(
            f"{where}: the conversation ends with a {checked[-1]['role']} turn; it must end "
            "with the assistant's reply (the text the model learns to write)."
        )
    if not any(t["role"] == "user" for t in checked):
        raise UserError(f"{where}: no user turn before the assistant's reply.")
    return checked


def redact_pairs(pairs: Pairs) -> tuple[Pairs, pii.RedactionCounts]:
    """Prompts (every turn) and responses with e-mails, phone and card numbers replaced."""
    total = pii.RedactionCounts()

    def clean(text: str) -> str:
        redacted, counts = pii.redact(text)
        total.add(counts)
        return redacted

    prompts: list[Prompt] = [
        clean(p) if isinstance(p, str) else [{**t, "content": clean(t["content"])} for t in p]
        for p in pairs.prompts
    ]
    responses = [clean(r) for r in pairs.responses]
    return replace(pairs, prompts=prompts, responses=responses), total
