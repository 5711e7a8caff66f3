"""A generation run end to end: prompt/response pairs in, a run folder out.

The generation task (modeling/generation.py) trains on the shared loop (training/loop.py,
`task=`), then generates responses for the evaluation prompts and scores them against the
references (evaluation/text_metrics.py). The run folder holds config.yaml, adapter/ (LoRA,
tokenizer, generator.json), metrics.json (`generation`: rougeL, chrf, tokens_per_second, n),
predictions.csv (prompt, reference, generated), report.md and environment.json.
`load_generator(folder / "adapter")` and `generate` give the same text again (greedy decoding).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetune.config import Config, save_yaml
from finetune.data.pairs import Pairs
from finetune.files import output_folder, staged
from finetune.modeling.generation import (
    ChatInputs,
    GenerationTask,
    build_generator,
    generate,
    save_generator,
)
from finetune.modeling.models import pick_device, use_bf16
from finetune.runtime import environment, peak_memory_mb
from finetune.training.loop import Rows, TrainingLoop


@dataclass
class GenerationRun:
    folder: Path
    metrics: dict[str, Any]
    generated: list[str]


def _rows(inputs: ChatInputs, pairs: Pairs | None) -> Rows:
    items = [] if pairs is None else inputs.encode_pairs(pairs.prompts, pairs.responses)
    return Rows(items, np.zeros(len(items), dtype=np.int64))


def train_generation(
    config: Config,
    train: Pairs,
    evaluation: Pairs,
    validation: Pairs | None = None,
    max_new_tokens: int = 64,
    show_progress: bool = False,
) -> GenerationRun:
    """Train LoRA on `train` (the kept epoch chosen on `validation`'s loss per token), then
    generate for `evaluation`'s prompts and write the run folder (`config.output`)."""
    folder = output_folder(config.output, config.recipe or "generation", config.overwrite)
    started = time.perf_counter()
    device = pick_device()
    bf16 = use_bf16(config.train.precision, device)
    model, tokenizer, info = build_generator(
        config.model, config.data.max_length, bf16, device, config.train.seed
    )
    inputs = ChatInputs(tokenizer, config.data.max_length)
    task = GenerationTask(inputs, config.train.eval_batch_size, device, bf16)
    loop = TrainingLoop(
        model,
        _rows(inputs, train),
        _rows(inputs, validation),
        config.train,
        inputs,
        device,
        bf16,
        show_progress=show_progress,
        task=task,
    )
    result = loop.run()
    out = generate(
        model, tokenizer, evaluation.prompts, max_new_tokens, config.train.eval_batch_size, bf16
    )
    from finetune.evaluation.text_metrics import text_metrics

    metrics = {
        "model": info.backbone,
        "generation": text_metrics(out.texts, evaluation.responses, out.new_tokens, out.seconds),
        "train": {
            "steps": result.steps,
            "best_epoch": result.best_epoch,
            "history": result.history,
            "train_seconds": result.train_seconds,
        },
    }
    env = environment(device, config.train.seed)
    env.update(
        wall_seconds=round(time.perf_counter() - started, 2), peak_rss_mb=round(peak_memory_mb(), 1)
    )
    with staged(folder) as tmp:
        _write(tmp, config, metrics, evaluation, out.texts)
        (tmp / "environment.json").write_text(json.dumps(env, indent=2))
        save_generator(model, tokenizer, info, tmp / "adapter")
    return GenerationRun(folder, metrics, out.texts)


def _write(
    folder: Path, config: Config, metrics: dict[str, Any], evaluation: Pairs, generated: list[str]
) -> None:
    import pandas as pd

    from finetune.reporting.generation import generation_report

    save_yaml(config, folder / "config.yaml")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    pd.DataFrame(
        {"prompt": evaluation.prompts, "reference": evaluation.responses, "generated": generated}
    ).to_csv(folder / "predictions.csv", index=False)
    report = generation_report(metrics, evaluation.prompts, evaluation.responses, generated)
    (folder / "report.md").write_text(report)
