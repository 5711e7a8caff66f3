"""A generation run end to end: prompt/response pairs in, a run folder out.

Stages: prepare (redact, build the model) -> fit (the shared loop, training/loop.py, with the
generation task) -> generate (the tuned model and the baselines, on validation and evaluation
prompts) -> score (evaluation/text_metrics.py, evaluation/reply_metrics.py) -> write.

Methods compared on the same prompts (`baselines`, chosen by the recipe):
- `model`: the fine-tuned model (greedy, batched, `max_new_tokens` cap);
- `untuned`: the same model with its adapter disabled, same chat prompt;
- `retrieval_tfidf` / `retrieval_embedding`: the reply of the most similar training message
  (TF-IDF cosine, character n-grams for CJK text / cosine of a frozen sentence encoder's
  vectors, MiniLM unless `retrieval_model` names another);
- `retrieval_consensus`: of the replies to the CONSENSUS_CANDIDATES training messages most
  similar by that encoder, the one most like the others (modeling/retrieval.py).
With labels on the pairs (e.g. intents), a reply classifier fitted on the training responses
gives intent consistency. The validation rows decide the run's verdict (does the tuned model
beat retrieval?) and what the run serves (`delivered`: with `eval.deliver` best, a
frozen-encoder retrieval (SERVABLE) when it beats the model on both ROUGE-L and chrF there by
more than the engine's margin, else the model); the evaluation rows are scored once.

The run folder: config.yaml, adapter/ (LoRA, tokenizer, generator.json), metrics.json
(`generation`: the model's rougeL, chrf, tokens_per_second, n; `reply`: figures per method;
`validation`; `train`), predictions.csv (message, reference, one column per method),
reply_classifier.pkl (with labels), retrieval.json + retrieval_vectors.npy (the frozen-encoder
retrieval index, when the run built one), retrieval_tfidf.json (the training messages and
replies TF-IDF retrieval reads, when it is a baseline), report.md and environment.json.
`load_generation_run(folder)` reloads it to reply (with what the run delivers), chat and
evaluate (every method the run scored, on new pairs).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from finetune.config import Config, load_yaml, save_yaml
from finetune.data.pairs import Pairs, conversation_text, redact_pairs
from finetune.errors import UserError
from finetune.evaluation.reply_metrics import VERDICT_METRICS, beats_on_both
from finetune.files import output_folder, staged
from finetune.modeling.generation import (
    RETRIEVAL_ENCODER,
    ChatInputs,
    GenerationTask,
    RetrievedReplies,
    build_generator,
    decoding_model,
    generate,
    save_generator,
)
from finetune.modeling.models import pick_device, use_bf16
from finetune.modeling.retrieval import SERVABLE
from finetune.runtime import environment, peak_memory_mb, warn_now
from finetune.training.checkpoint import open_checkpoints
from finetune.training.loop import Rows, TrainingLoop

BASELINES = ("untuned", "retrieval_tfidf", *SERVABLE)
TFIDF_PAIRS = "retrieval_tfidf.json"  # what TF-IDF retrieval reads, for `evaluate` on new pairs


@dataclass
class GenerationRun:
    folder: Path
    metrics: dict[str, Any]
    generated: list[str]


@dataclass
class Scored:
    """Each method's replies to some pairs, and the model's decoding throughput."""

    texts: dict[str, list[str]] = field(default_factory=dict)
    new_tokens: int = 0
    seconds: float = 0.0


def _rows(inputs: ChatInputs, pairs: Pairs | None) -> Rows:
    items = [] if pairs is None else inputs.encode_pairs(pairs.prompts, pairs.responses)
    return Rows(items, np.zeros(len(items), dtype=np.int64))


def _redact(
    train: Pairs, evaluation: Pairs, validation: Pairs | None
) -> tuple[Pairs, Pairs, Pairs | None, dict[str, int]]:
    """The pairs with PII replaced in prompts and responses, and the counts replaced."""
    train, counts = redact_pairs(train)
    evaluation, eval_counts = redact_pairs(evaluation)
    counts.add(eval_counts)
    if validation is not None:
        validation, val_counts = redact_pairs(validation)
        counts.add(val_counts)
    return train, evaluation, validation, counts.as_dict()


def _prompted(
    train: Pairs, validation: Pairs | None, retrieved: RetrievedReplies | None, system: str | None
) -> tuple[Pairs, Pairs | None]:
    """The training and validation pairs as the model sees them (with retrieved replies when
    the run uses them)."""
    if retrieved is None:
        return train, validation
    checked = validation
    if validation is not None:
        prompts = retrieved.prompts(validation.prompts, system)
        checked = Pairs(prompts, validation.responses, validation.name)
    return retrieved.training_pairs(train, system), checked


def train_generation(
    config: Config,
    train: Pairs,
    evaluation: Pairs,
    validation: Pairs | None = None,
    max_new_tokens: int = 64,
    show_progress: bool = False,
    system: str | None = None,
    baselines: tuple[str, ...] = (),
    retrieved_reply: bool = False,
    min_share: float = 0.0,
    decode_batch: int | None = None,
    retrieval_model: str = RETRIEVAL_ENCODER,
) -> GenerationRun:
    """Train LoRA on `train` (the kept epoch chosen on `validation`'s loss per token), then
    generate for `evaluation`'s prompts with the model and `baselines` (names in BASELINES),
    and write the run folder (`config.output`). With `retrieved_reply`, every prompt (the
    model's and the untuned model's) carries the nearest training reply (RetrievedReplies),
    and no reply ends before `min_share` of that reply's length in tokens. `decode_batch`:
    replies decoded together (None: the evaluation batch size). `retrieval_model`: the frozen
    sentence encoder of the retrieved replies and the `retrieval_embedding` baseline."""
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown generation baselines {sorted(unknown)}; known: {BASELINES}")
    folder = output_folder(config.output, config.recipe or "generation", config.overwrite)
    started = time.perf_counter()
    redacted = None
    if config.data.redact_pii:
        train, evaluation, validation, redacted = _redact(train, evaluation, validation)
    device = pick_device()
    checkpoints = open_checkpoints(folder, config, device, main=True)
    bf16 = use_bf16(config.train.precision, device)
    model, tokenizer, info = build_generator(
        config.model, config.data.max_length, bf16, device, config.train.seed
    )
    info.system = system
    inputs = ChatInputs(tokenizer, config.data.max_length, system)
    task = GenerationTask(inputs, config.train.eval_batch_size, device, bf16)
    index, notes = None, []  # the nearest training replies by retrieval_model's vectors
    if retrieved_reply or set(SERVABLE) & set(baselines):
        batch = config.train.eval_batch_size
        index = RetrievedReplies.fit(train, batch, device, retrieval_model, retrieved_reply)
        notes = index.notes(train.messages)  # the encoder cannot read the messages
        warn_now(*notes)
    retrieved = index if retrieved_reply else None
    fitted, checked_pairs = _prompted(train, validation, retrieved, system)
    loop = TrainingLoop(
        model,
        _rows(inputs, fitted),
        _rows(inputs, checked_pairs),
        config.train,
        inputs,
        device,
        bf16,
        checkpoints=checkpoints,
        show_progress=show_progress,
        task=task,
    )
    result = loop.run(resume=config.resume)
    batch = decode_batch or config.train.eval_batch_size
    decode = Decoder(
        model, tokenizer, max_new_tokens, batch, bf16, system, retrieved, min_share, show_progress
    )
    judge = Judge.fit(train, config.train.seed)
    scored, checked = _scored(decode, train, evaluation, validation, baselines, index)
    metrics = _metrics(info.backbone, result, judge, evaluation, scored, validation, checked)
    _add_run_facts(metrics, config, redacted, index, notes)
    env = environment(device, config.train.seed)
    env.update(
        wall_seconds=round(time.perf_counter() - started, 2), peak_rss_mb=round(peak_memory_mb(), 1)
    )
    with staged(folder) as tmp:
        _write(tmp, config, metrics, evaluation, scored)
        (tmp / "environment.json").write_text(json.dumps(env, indent=2), encoding="utf-8")
        save_generator(model, tokenizer, info, tmp / "adapter")
        judge.save(tmp)
        _save_retrieval(tmp, index, train if "retrieval_tfidf" in baselines else None)
    checkpoints.clear()  # the run folder is complete: nothing left to resume
    return GenerationRun(folder, metrics, scored.texts["model"])


def _save_retrieval(folder: Path, index: RetrievedReplies | None, tfidf: Pairs | None) -> None:
    """The frozen-encoder index (when the run built one) and the training pairs TF-IDF
    retrieval reads (`tfidf`, when it is a baseline), for `evaluate` on new pairs."""
    if index is not None:
        index.save(folder)
    if tfidf is not None:
        pairs = {"messages": tfidf.messages, "replies": tfidf.responses}
        text = json.dumps(pairs, ensure_ascii=False)
        (folder / TFIDF_PAIRS).write_text(text, encoding="utf-8")


def _add_run_facts(
    metrics: dict[str, Any],
    config: Config,
    redacted: dict[str, int] | None,
    index: RetrievedReplies | None,
    notes: list[str],
) -> None:
    """What the run serves (`delivered`: `best` from the validation figures, `name` as
    `eval.deliver` asks), what it redacted, whether its prompts carried retrieved replies, its
    retrieval encoder and `notes` on what that encoder could read."""
    checked = metrics.get("validation")
    best = delivered(checked["figures"]) if checked else "model"
    # eval.deliver finetuned: the model, as asked; the report names the better one.
    metrics["delivered"] = {
        "name": best if config.eval.deliver == "best" else "model",
        "best": best,
    }
    metrics["pii_redacted"] = redacted
    metrics["retrieved_reply"] = index is not None and index.in_prompts
    if index is not None:  # which encoder, and whether it could read the messages
        metrics.update(retrieval_model=index.model, notes=notes)


@dataclass
class Decoder:
    """Greedy, batched decoding with the run's settings (the tuned model, or the untuned one
    without its adapter); on a CPU through copies with the adapter folded in or left out."""

    model: Any
    tokenizer: Any
    max_new_tokens: int
    batch_size: int
    bf16: bool
    system: str | None
    retrieved: RetrievedReplies | None = None
    # With retrieved replies: a reply may not end before this share of its retrieved reply's
    # length in tokens (0: it may end anywhere).
    min_share: float = 0.0
    # Progress bars over the replies of a run's evaluation and validation messages.
    show_progress: bool = False

    # The CPU decoding copies (decoding_model), tuned (False) and untuned (True), made at the
    # first call: the model must not change after it.
    copies: dict[bool, Any] = field(default_factory=dict, repr=False)

    def __call__(self, prompts: list[Any], untuned: bool = False, rows: str = "") -> Any:
        """Replies to `prompts`; with a progress bar named after `rows` (the messages' name)
        when the run shows them."""
        floors = None
        if self.retrieved is not None:
            prompts, replies = self.retrieved.with_replies(prompts, self.system)
            if self.min_share:
                lengths = [len(self.tokenizer(r)["input_ids"]) for r in replies]
                floors = [min(math.ceil(self.min_share * n), self.max_new_tokens) for n in lengths]
        if untuned not in self.copies:
            self.copies[untuned] = decoding_model(self.model, untuned)
        label = None
        if self.show_progress and rows:
            label = f"{'untuned' if untuned else 'fine-tuned'} model's replies, {rows} messages"
        if self.copies[untuned] is not None:
            return self._generate(self.copies[untuned], prompts, floors, label)
        if untuned:
            with self.model.backbone.disable_adapter():
                return self._generate(self.model, prompts, floors, label)
        return self._generate(self.model, prompts, floors, label)

    def _generate(
        self, model: Any, prompts: list[Any], floors: list[int] | None, label: str | None
    ) -> Any:
        return generate(
            model,
            self.tokenizer,
            prompts,
            self.max_new_tokens,
            self.batch_size,
            self.bf16,
            system=self.system,
            min_new_tokens=floors,
            progress=label,
        )


def _scored(
    decode: Decoder,
    train: Pairs,
    evaluation: Pairs,
    validation: Pairs | None,
    baselines: tuple[str, ...],
    index: RetrievedReplies | None,
) -> tuple[Scored, Scored | None]:
    """Every method's replies to the evaluation pairs; the model's and retrieval's to the
    validation pairs (None without them), which decide the verdict."""
    scored = score_methods(decode, train, evaluation, baselines, index, "evaluation")
    if validation is None or not len(validation) or not baselines:
        return scored, None
    retrieval = tuple(b for b in baselines if b.startswith("retrieval"))
    return scored, score_methods(decode, train, validation, retrieval, index, "validation")


def score_methods(
    decode: Decoder,
    train: Pairs,
    pairs: Pairs,
    baselines: tuple[str, ...],
    index: RetrievedReplies | None = None,
    rows: str = "",
) -> Scored:
    """Replies to `pairs` (named `rows` in progress bars) from the tuned model and each
    baseline; `index` serves the SERVABLE ones."""
    from finetune.evaluation.reply_metrics import retrieve_tfidf

    out = decode(pairs.prompts, rows=rows)
    scored = Scored({"model": out.texts}, out.new_tokens, out.seconds)
    if "untuned" in baselines:
        scored.texts["untuned"] = decode(pairs.prompts, untuned=True, rows=rows).texts
    if "retrieval_tfidf" in baselines:
        scored.texts["retrieval_tfidf"] = retrieve_tfidf(
            train.messages, train.responses, pairs.messages
        )
    if set(SERVABLE) & set(baselines):
        if index is None:
            raise ValueError("the frozen-encoder retrieval baselines need the retrieval index")
        retrieved = index.served(pairs.messages)
        scored.texts.update({name: retrieved[name] for name in baselines if name in retrieved})
    return scored


@dataclass
class Judge:
    """The reply classifier (reply -> label), fitted on the training responses, with
    out-of-fold labels for replies that are training responses; None when the pairs have no
    labels."""

    classifier: Any = None

    @classmethod
    def fit(cls, train: Pairs, seed: int) -> Judge:
        from finetune.evaluation.reply_metrics import fit_reply_judge

        if train.labels is None or len(set(train.labels)) < 2:
            return cls(None)
        return cls(fit_reply_judge(train.responses, train.labels, seed))

    def figures(self, texts: list[str], pairs: Pairs) -> dict[str, Any]:
        from finetune.evaluation.reply_metrics import reply_figures

        labels = pairs.labels if self.classifier is not None else None
        conversations = [conversation_text(p) for p in pairs.prompts]
        return reply_figures(texts, pairs.responses, conversations, labels, self.classifier)

    def in_sample(self) -> dict[str, Any] | None:
        """The intents whose training replies the judge labels with the classifier fitted on
        them (too few to hold one out), and how many intents it knows; None without a judge.
        A judge saved before out-of-fold labels labels all of them so."""
        from finetune.evaluation.reply_metrics import OutOfFoldJudge

        if self.classifier is None:
            return None
        judged = isinstance(self.classifier, OutOfFoldJudge)
        known = [str(c) for c in getattr(self.classifier, "classifier", self.classifier).classes_]
        return {"intents": list(self.classifier.in_sample) if judged else known, "of": len(known)}

    def on_references(self, pairs: Pairs) -> dict[str, float] | None:
        """The classifier's intent figures on the reference replies themselves: what a method
        whose replies were the references would score, so the ceiling of intent consistency
        under this classifier (None without labels)."""
        from finetune.evaluation.reply_metrics import intent_consistency

        if self.classifier is None or pairs.labels is None:
            return None
        return intent_consistency(self.classifier, pairs.responses, pairs.labels)

    def save(self, folder: Path) -> None:
        if self.classifier is not None:  # scikit-learn's own format is pickle
            import pickle

            (folder / "reply_classifier.pkl").write_bytes(pickle.dumps(self.classifier))

    @classmethod
    def load(cls, folder: Path) -> Judge:
        path = folder / "reply_classifier.pkl"
        if not path.is_file():
            return cls(None)
        import pickle

        return cls(pickle.loads(path.read_bytes()))  # the run's own file, written by save()


def _metrics(
    backbone: str,
    result: Any,
    judge: Judge,
    evaluation: Pairs,
    scored: Scored,
    validation: Pairs | None,
    checked: Scored | None,
) -> dict[str, Any]:
    from finetune.evaluation.text_metrics import text_metrics

    reply = {name: judge.figures(texts, evaluation) for name, texts in scored.texts.items()}
    model = reply["model"]
    metrics: dict[str, Any] = {
        "task": "generation",
        "model": backbone,
        "n_eval": len(evaluation),
        "generation": text_metrics(
            scored.texts["model"], evaluation.responses, scored.new_tokens, scored.seconds
        ),
        "reply": reply,
        "reference_intents": judge.on_references(evaluation),
        "judge_in_sample": judge.in_sample(),
        "accuracy": model["intent_accuracy"],
        "recall": model["intent_recall"],
        "f1": model["intent_f1"],
        "train": {
            "steps": result.steps,
            "best_epoch": result.best_epoch,
            "history": result.history,
            "train_seconds": result.train_seconds,
            "samples_per_second": result.samples_per_second,
            "tokens_per_second": result.tokens_per_second,
        },
    }
    if validation is not None and checked is not None:
        metrics["validation"] = verdict(judge, validation, checked)
    return metrics


def verdict(judge: Judge, validation: Pairs, checked: Scored) -> dict[str, Any]:
    """Validation figures of the model and retrieval, and whether the model loses (a lower
    ROUGE-L or chrF than any retrieval baseline): decided on validation rows, never on the
    evaluation rows."""
    figures = {
        name: {k: judge.figures(texts, validation)[k] for k in VERDICT_METRICS}
        for name, texts in checked.texts.items()
    }
    losses = [
        f"{name} {metric}"
        for name, values in figures.items()
        if name != "model"
        for metric in VERDICT_METRICS
        if values[metric] > figures["model"][metric]
    ]
    return {"n": len(validation), "figures": figures, "model_loses_to": losses}


def delivered(figures: dict[str, dict[str, float]]) -> str:
    """What the run serves, from validation `figures` (verdict's): of the retrievals it can
    serve (SERVABLE), those that beat the fine-tuned model on both figures (`beats_on_both`),
    the one highest on their sum (the first on a tie); else the model. A mixed result keeps
    the model: neither is better on the evidence, and the verdict says where the model is
    lower."""
    rivals = [
        name
        for name in SERVABLE
        if name in figures and beats_on_both(figures[name], figures["model"])
    ]
    if not rivals:
        return "model"
    return max(rivals, key=lambda name: sum(figures[name][k] for k in VERDICT_METRICS))


def _write(
    folder: Path, config: Config, metrics: dict[str, Any], evaluation: Pairs, scored: Scored
) -> None:
    import pandas as pd

    from finetune.reporting.generation import generation_report

    save_yaml(config, folder / "config.yaml")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    columns: dict[str, Any] = {"prompt": evaluation.messages, "reference": evaluation.responses}
    if evaluation.labels is not None:
        columns["label"] = evaluation.labels
    columns["generated"] = scored.texts["model"]
    columns.update({name: texts for name, texts in scored.texts.items() if name != "model"})
    pd.DataFrame(columns).to_csv(folder / "predictions.csv", index=False)
    report = generation_report(metrics, evaluation.messages, evaluation.responses, scored.texts)
    (folder / "report.md").write_text(report, encoding="utf-8")


def is_generation_run(folder: str | Path) -> bool:
    return (Path(folder) / "adapter" / "generator.json").is_file()


@dataclass
class LoadedGenerator:
    """A generation run folder, loaded to reply, chat and evaluate."""

    folder: Path
    config: dict[str, Any]
    judge: Judge
    redact: bool
    # Builds the fine-tuned model's Decoder (see `decode`).
    build_decoder: Callable[[], Decoder] = field(repr=False)
    # Said before serving when the fine-tuned model lost to retrieval on validation (or None).
    note: str | None = None
    # The run's retrieval index (in its prompts or not), None when it kept none.
    index: RetrievedReplies | None = None
    # What `reply` serves: "model", or one of SERVABLE (a retrieved reply itself).
    serve: str = "model"

    @cached_property
    def decode(self) -> Decoder:
        """The fine-tuned model's decoder, loaded at first use: a run that serves retrieval
        replies without loading its chat model."""
        return self.build_decoder()

    def prepare(self, prompts: list[Any]) -> list[Any]:
        """The prompts as training saw them (PII-redacted when the run redacted)."""
        if isinstance(prompts, str):  # not its characters, one reply each
            raise UserError("Pass a list of messages; for one message, [message].")
        for row, prompt in enumerate(prompts):
            if not isinstance(prompt, str | list):
                raise UserError(
                    f"Message {row} is {type(prompt).__name__}: give a string, or a "
                    "conversation as a list of role/content turns."
                )
        if not self.redact:
            return list(prompts)
        return redact_pairs(Pairs(list(prompts), [""] * len(prompts)))[0].prompts

    def reply(self, prompts: list[Any]) -> list[str]:
        """Replies to messages (strings) or conversations (lists of role/content turns). When
        the run redacts PII, so does what it serves: an e-mail, phone or card number a reply
        makes up is replaced, and so is a number of 5 digits or more the conversation did not
        give (the run's `pii_leaks` and `foreign_numbers` count them before this)."""
        prompts = self.prepare(prompts)
        if self.serve in SERVABLE:  # load_generation_run refuses it without an index
            from finetune.data.pairs import prompt_text

            messages = [prompt_text(p) for p in prompts]
            texts = self.index.served(messages)[self.serve] if prompts else []
        else:
            texts = self.decode(prompts).texts
        if not self.redact:
            return texts
        from finetune.data.pii import redact_replies

        return redact_replies(texts, [conversation_text(p) for p in prompts])[0]

    def evaluate(self, pairs: Pairs) -> dict[str, Any]:
        """Figures on new pairs (intent figures with labels and a saved judge) of the model
        and of every baseline the run scored: the untuned model, TF-IDF retrieval (from the
        training pairs the run kept for it) and the frozen-encoder retrieval of its index."""
        from finetune.evaluation.reply_metrics import retrieve_tfidf

        if self.redact:
            pairs = redact_pairs(pairs)[0]
        out = self.decode(pairs.prompts)
        reply = {"model": self.judge.figures(out.texts, pairs)}
        if "untuned" in (run_metrics(self.folder).get("reply") or {}):
            untuned = self.decode(pairs.prompts, untuned=True).texts
            reply["untuned"] = self.judge.figures(untuned, pairs)
        if (self.folder / TFIDF_PAIRS).is_file():
            kept = json.loads((self.folder / TFIDF_PAIRS).read_text(encoding="utf-8"))
            retrieved = retrieve_tfidf(kept["messages"], kept["replies"], pairs.messages)
            reply["retrieval_tfidf"] = self.judge.figures(retrieved, pairs)
        metrics = {
            "n": len(pairs),
            "reply": reply,
            "reference_intents": self.judge.on_references(pairs),
            "judge_in_sample": self.judge.in_sample(),
            "tokens_per_second": out.new_tokens / (out.seconds or 1.0),
        }
        if self.index is not None:  # the run's retrieval, named in the table
            for name, texts in self.index.served(pairs.messages).items():
                reply[name] = self.judge.figures(texts, pairs)
            metrics["retrieval_model"] = self.index.model
        metrics["delivered"] = {"name": self.serve}
        return metrics


def load_generation_run(
    folder: str | Path, max_new_tokens: int | None = None, serve: str | None = None
) -> LoadedGenerator:
    """A run folder loaded to serve what the run delivers; `serve="model"` serves the
    fine-tuned model's replies whatever the run delivers."""
    from finetune.modeling.generation import load_generator
    from finetune.reporting.generation import served, serving_note

    folder = Path(folder)
    if not is_generation_run(folder):
        raise UserError(f"{folder} is not a generation run folder (no adapter/generator.json).")
    config = load_yaml(folder / "config.yaml")
    options = config.get("options") or {}
    batch = int((config.get("train") or {}).get("eval_batch_size") or 16)
    index = RetrievedReplies.load(folder, batch, pick_device())
    retrieved = index if index is not None and index.in_prompts else None

    def build_decoder() -> Decoder:
        model, tokenizer, info = load_generator(folder / "adapter")
        tokens = max_new_tokens or int(options.get("max_new_tokens") or 64)
        decode_batch = int(options.get("decode_batch") or batch)  # older runs: the eval batch
        share = float(options.get("min_reply_share") or 0.0)
        return Decoder(
            model, tokenizer, tokens, decode_batch, info.bf16, info.system, retrieved, share
        )

    redact = bool((config.get("data") or {}).get("redact_pii"))
    metrics = run_metrics(folder)
    serve = serve or served(metrics)
    if serve not in ("model", *SERVABLE) or (serve in SERVABLE and index is None):
        kinds = ", ".join(("model", *SERVABLE)) if index is not None else "model"
        raise UserError(f"{folder}: cannot serve '{serve}' (it serves {kinds}).")
    note = serving_note(metrics, serve) if metrics else None
    loaded = LoadedGenerator(
        folder, config, Judge.load(folder), redact, build_decoder, note, index, serve
    )
    if serve == "model":  # load the model now: a broken adapter fails here, not mid-chat
        _ = loaded.decode
    return loaded


def run_metrics(folder: Path) -> dict[str, Any]:
    metrics = folder / "metrics.json"
    return json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else {}
