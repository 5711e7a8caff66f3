"""`finetune export`: a run's LoRA merged into its backbone, as a standalone model folder.

The classifier is backbone -> pooling -> linear head (see models.py), which is not a stock
`*ForSequenceClassification` architecture for every backbone (mean-pooled encoders have none,
and Llama's `score` layer has no bias). So the export is uniform for every architecture:

- the merged backbone, loadable with `AutoModel.from_pretrained(folder)` (safetensors);
- `head.safetensors` (the linear head) and `classifier.json` (pooling, labels, max_length);
- the tokenizer (with its pad token), and `predict.py`: the dozen lines of pooling + head,
  using only torch, transformers and safetensors;
- for runs that redact PII, `pii.py`: a copy of `finetune/data/pii.py` (standard library
  only), so `predict.py` redacts new texts exactly as training did.

`predict.py` takes texts as they are, so only runs whose model reads the user's texts as
given can be exported: recipes whose texts are built from something else
(`Recipe.built_texts`: patient records, interaction histories) are refused with the reason.
Image runs export through image_export.py (a predict.py that reads image files).

What the run serves beside or instead of its model (a blend with the TF-IDF baseline, that
baseline alone, calibration) comes in as plain scikit-learn parts (`served`, from
evaluation/selection.py's `portable`; None or {}: the model as it is), is written to
`delivered.joblib`, and predict.py applies it; the written predict.py is then checked against
`reference`, the run's own served probabilities of the evaluation texts. A run that serves its
frozen probe exports the backbone without its adapter and the probe as the head: the same
predict.py then computes exactly what the probe reads.

Quantized runs are merged onto the full-precision base weights, not onto dequantized 4/8-bit
ones: merging LoRA deltas into rounded weights would bake the rounding into the export. The
export measures, on texts of the run's evaluation split, how far the merged model's
probabilities are from the adapter's on the same base (merging error: about 1e-6) and from
the run as trained (for quantized runs this also contains the quantization error).
"""

from __future__ import annotations

import inspect
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from finetune.config import load_yaml
from finetune.data import pii
from finetune.data.pairs import conversation_text
from finetune.errors import UserError
from finetune.files import check_output_folder, staged, write_texts
from finetune.modeling.image_export import agreement, export_image, exported_probabilities
from finetune.modeling.reply_export import exported_replies, write_reply_kit
from finetune.modeling.retrieval import SERVABLE, SERVED_AS
from finetune.modeling.served_calibration import calibrate

CHECK_TEXTS = 64  # evaluation texts used to compare the merged model with the adapter

PREDICT_PY = (
    '''"""Predict with this merged classifier (torch, transformers, safetensors, numpy).

    python predict.py "where is my parcel?" "I want a refund"

In Python: `labels, predict_proba = load(folder)`; `predict_proba(texts)` gives one row of
class probabilities per text, in the order of `labels`. When the run served something other
than its fine-tuned model as it is (a blend with a TF-IDF baseline, that baseline alone, or
calibrated probabilities), `delivered.joblib` holds those parts (scikit-learn and joblib
needed) and `predict_proba` serves what the run served; `load(folder, served=False)` gives
the fine-tuned model's own probabilities. (Where the run served its frozen probe, this
folder's model is that probe: see README.md.)
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging


def redactor(folder, info):
    """The run's preprocessing: PII redaction with the pii.py shipped alongside, if it used it."""
    if not info.get("redact_pii"):
        return list
    # Loaded by path (the folder need not be on sys.path); registered before it runs, as
    # dataclasses look their module up there.
    spec = importlib.util.spec_from_file_location("_exported_pii", Path(folder) / "pii.py")
    pii = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pii
    spec.loader.exec_module(pii)
    return lambda texts: pii.redact_all(texts)[0]


def served_parts(folder):
    """What the run served beside or instead of the model (None: the model as it is)."""
    path = Path(folder) / "delivered.joblib"
    if not path.is_file():
        return None
    import joblib  # scikit-learn objects, written by the export from the run's own

    return joblib.load(path)


def serve(parts, texts, proba):
    """The run's delivered probabilities from the model's (`proba`, None when unused)."""
    text_model = parts["text_model"]
    if text_model is not None:
        model = text_model["model"]
        baseline = np.zeros((len(texts), text_model["n_classes"]))
        features = text_model["vectorizer"].transform(texts)
        baseline[:, model.classes_] = model.predict_proba(features)
        proba = baseline if proba is None else (proba + baseline) / 2
    return calibrate(proba, parts["calibration"])


def load(folder=Path(__file__).resolve().parent, served=True):
    folder = Path(folder)
    info = json.loads((folder / "classifier.json").read_text(encoding="utf-8"))
    prepare = redactor(folder, info)
    parts = served_parts(folder) if served else None
    if parts is not None and not parts["uses_model"]:  # the baseline alone: no model to load
        return info["labels"], lambda texts: serve(parts, prepare(list(texts)), None)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "right"  # "last" pooling reads the last real token of each row
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # an encoder's pooler, unused here, is reported as missing
    backbone = AutoModel.from_pretrained(folder).eval()
    logging.set_verbosity(verbosity)
    head = torch.nn.Linear(info["hidden_size"], len(info["labels"]))
    head.load_state_dict(load_file(folder / "head.safetensors"))

    prompt = info.get("prompt", "")  # the text the run put before every message

    @torch.no_grad()
    def model_proba(texts):
        batch = tokenizer(
            [prompt + text for text in texts], padding=True, truncation=True,
            max_length=info["max_length"], return_tensors="pt",
        )
        mask = batch["attention_mask"]
        states = backbone(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        if info["pooling"] == "cls":
            pooled = states[:, 0]
        elif info["pooling"] == "last":
            pooled = states[torch.arange(len(states)), mask.sum(dim=1) - 1]
        else:  # mean over real tokens
            weights = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return torch.softmax(head(pooled.float()), dim=-1).numpy()

    def predict_proba(texts):
        texts = prepare(list(texts))
        proba = model_proba(texts)
        return proba if parts is None else serve(parts, texts, proba)

    return info["labels"], predict_proba


'''
    + inspect.getsource(calibrate)
    + """

if __name__ == "__main__":
    sys.stdout.reconfigure(errors="backslashreplace")  # a label the console cannot encode
    labels, predict_proba = load()
    for text, row in zip(sys.argv[1:], predict_proba(sys.argv[1:])):
        print(f"{labels[row.argmax()]}\\t{row.max():.3f}\\t{text}")
"""
)


def export_merged(
    run_folder: str | Path,
    output: str | Path,
    overwrite: bool = False,
    served: dict[str, Any] | None = None,
    reference: Callable[[list[str]], np.ndarray] | None = None,
) -> dict:
    """Write the merged, standalone model folder; return the agreement checks. `served`,
    `reference`: what the run serves, and its probabilities (the module's docstring)."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from finetune.modeling import models
    from finetune.modeling.classifiers import load_classifier
    from finetune.modeling.inference import predict_proba
    from finetune.modeling.inputs import tokenize

    run_folder, output = Path(run_folder), Path(output)
    adapter = run_folder / "adapter"
    run_config = _run_config(run_folder)
    _refuse_built_texts(run_folder, run_config.get("recipe"))
    _check_folders(run_folder, output, overwrite)
    described = json.loads((adapter / "classifier.json").read_text(encoding="utf-8"))
    labels = json.loads((run_folder / "labels.json").read_text(encoding="utf-8"))["labels"]
    probe = (served or {}).get("probe")
    if described.get("kind") == "image":
        return export_image(run_folder, output, labels, served, reference)
    check_exportable(run_folder, described)
    redact_pii = bool((run_config.get("data") or {}).get("redact_pii"))
    info = models.ClassifierInfo(**described)
    texts = _evaluation_column(run_folder, "text", CHECK_TEXTS)  # redacted, as trained
    if probe is not None:
        return _export_probe(run_folder, output, info, labels, served, texts, reference, redact_pii)

    # Full-precision base, whatever the run trained on: quant "none", fp32.
    base = models.load_backbone(info.backbone, "none", torch.float32, info.trust_remote_code)
    peft_model = PeftModel.from_pretrained(base, str(adapter))
    classifier = models.TextClassifier(peft_model, info.hidden_size, info.num_labels, info.pooling)
    classifier.head.load_state_dict(load_file(str(adapter / "head.safetensors")))
    classifier.eval()
    tokenizer = _tokenizer(adapter)
    ids = tokenize(tokenizer, texts, info.max_length, info.prompt)
    pad = tokenizer.pad_token_id

    def probabilities(model: Any, bf16: bool = False, device: str = "cpu") -> np.ndarray:
        return predict_proba(model, ids, pad, 32, device, bf16) if ids else np.zeros((0, 0))

    unmerged = probabilities(classifier)
    if info.quant == "none":  # the run as trained: same weights, its own precision
        trained = probabilities(classifier, info.bf16) if info.bf16 else unmerged
    merged_backbone = peft_model.merge_and_unload()
    classifier.backbone = merged_backbone
    merged = probabilities(classifier)
    if info.quant != "none":  # the adapter on the quantized base, as trained
        quantized, _, loaded = load_classifier(adapter)
        trained = probabilities(quantized, loaded.bf16, models.pick_device())
    checks = {
        "texts": len(texts),
        "merged_vs_adapter_same_base": agreement(merged, unmerged),
        "merged_vs_trained_run": agreement(merged, trained),
        "run_quant": info.quant,
        "run_bf16_autocast": info.bf16,
    }
    with staged(output) as tmp:
        head = {k: v.detach().cpu().contiguous() for k, v in classifier.head.state_dict().items()}
        _write_classifier(tmp, run_folder, merged_backbone, tokenizer, head, redact_pii)
        description = _description(info, labels, redact_pii)
        write_texts(tmp, {"classifier.json": description})
        if served:
            checks.update(_write_served(tmp, served, texts, reference))
        readme = _readme(run_folder, info, labels, checks, redact_pii)
        write_texts(tmp, {"export.json": json.dumps(checks, indent=2), "README.md": readme})
    return checks


def _export_probe(
    run_folder: Path,
    output: Path,
    info: Any,
    labels: list[str],
    served: dict[str, Any],
    texts: list[str],
    reference: Callable[[list[str]], np.ndarray] | None,
    redact_pii: bool,
) -> dict:
    """The folder for a run that serves its frozen probe: the full-precision backbone without
    the adapter, the probe as its head (and its calibration, if any, in delivered.joblib)."""
    import torch

    from finetune.modeling import models

    backbone = models.load_backbone(info.backbone, "none", torch.float32, info.trust_remote_code)
    head = {
        key: torch.as_tensor(served["probe"][key], dtype=torch.float32).contiguous()
        for key in ("weight", "bias")
    }
    checks: dict[str, Any] = {"texts": len(texts), "run_quant": info.quant}
    checks["run_bf16_autocast"] = info.bf16
    with staged(output) as tmp:
        tokenizer = _tokenizer(run_folder / "adapter")
        _write_classifier(tmp, run_folder, backbone, tokenizer, head, redact_pii)
        description = json.loads(_description(info, labels, redact_pii))
        description.update(merged_onto=None, head="frozen probe (embedding_logreg)")
        write_texts(tmp, {"classifier.json": json.dumps(description, indent=2)})
        parts = {**served, "probe": None}
        calibrated = parts["calibration"] is not None
        checks.update(_write_served(tmp, parts, texts, reference, calibrated))
        readme = _probe_readme(run_folder, info, labels, checks, redact_pii)
        write_texts(tmp, {"export.json": json.dumps(checks, indent=2), "README.md": readme})
    return checks


def _tokenizer(adapter: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(adapter))


def _write_classifier(
    folder: Path,
    run_folder: Path,
    backbone: Any,
    tokenizer: Any,
    head: dict[str, Any],
    redact_pii: bool,
) -> None:
    """What every text export holds: the backbone, its tokenizer, the head, predict.py, the
    run's redactor when it redacted (the redactor itself, not a second copy of its patterns)
    and the run's config."""
    from safetensors.torch import save_file

    backbone.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    save_file(head, str(folder / "head.safetensors"))
    if redact_pii:
        shutil.copy(Path(pii.__file__), folder / "pii.py")
    write_texts(folder, {"predict.py": PREDICT_PY})
    config = run_folder / "config.yaml"
    if config.is_file():
        shutil.copy(config, folder / "training_config.yaml")


def _description(info: Any, labels: list[str], redact_pii: bool) -> str:
    """classifier.json: what predict.py needs (pooling, labels, max_length, redaction)."""
    description = {**asdict(info), "labels": labels, "merged_onto": "full-precision base"}
    description.update(quant="none", trained_with_quant=info.quant, redact_pii=redact_pii)
    return json.dumps(description, indent=2)


def _write_served(
    folder: Path,
    served: dict[str, Any],
    texts: list[str],
    reference: Callable[[list[str]], np.ndarray] | None,
    parts: bool = True,
) -> dict[str, Any]:
    """delivered.joblib in the export `folder` (unless `parts` is False: nothing to add to
    the folder's model), and how far the folder's own predict.py is from the run's served
    probabilities (`reference`) on `texts`."""
    checks: dict[str, Any] = {"serves": served["name"]}
    if parts:
        import joblib
        import sklearn

        joblib.dump(served, folder / "delivered.joblib")
        # joblib files are pickles: they load reliably with the scikit-learn that wrote them.
        checks["scikit_learn"] = sklearn.__version__
    if reference is not None and texts:
        exported = exported_probabilities(folder, texts)
        checks["served_vs_run"] = agreement(exported, reference(texts))
    return checks


def _check_folders(run_folder: Path, output: Path, overwrite: bool) -> None:
    """A finished run folder in, a new (or --overwrite) folder out."""
    adapter = run_folder / "adapter"
    if not (adapter / "classifier.json").is_file() or not (run_folder / "labels.json").is_file():
        raise UserError(f"{run_folder} is not a finished run folder (no adapter/classifier.json).")
    _check_output(run_folder, output, overwrite)


def _check_output(run_folder: Path, output: Path, overwrite: bool) -> None:
    """A new (or --overwrite) folder out, other than the run's."""
    check_output_folder(output, overwrite)
    if output.resolve() == run_folder.resolve():
        raise UserError("--output must differ from --run.")


def _run_config(run_folder: Path) -> dict[str, Any]:
    """The run's saved config.yaml as a mapping ({} when it has none)."""
    config_file = run_folder / "config.yaml"
    return load_yaml(config_file) if config_file.is_file() else {}


def _refuse_built_texts(run_folder: Path, recipe_name: str | None) -> None:
    """Refuse a run of a recipe whose model reads texts it builds (patient records, histories):
    the standalone predict.py (raw texts in) cannot build them."""
    recipe = _recipe(recipe_name)
    if recipe is not None and recipe.built_texts:
        raise UserError(
            f"{run_folder} is a {recipe.name} run: its model reads texts built from "
            f"{recipe.built_texts}, which the exported predict.py (raw texts in) cannot build. "
            f"Use the run folder itself (recipe.load / finetune {recipe.name} "
            f"{recipe.serve_command})."
        )


def check_exportable(run_folder: Path, described: dict[str, Any]) -> None:
    """Refuse runs whose inputs the standalone predict.py (raw texts in) cannot reproduce."""
    if described.get("n_features"):
        raise UserError(
            f"{run_folder} reads table columns beside the text (model.side_features), which the "
            "exported predict.py (raw texts in) cannot give it. Use the run folder itself "
            "(recipe.load / finetune RECIPE predict)."
        )


def _recipe(name: str | None) -> Any:
    """The registered recipe of that name (None for a recipe of the user's own)."""
    from finetune.registry import load_entry, recipe_entries

    entries = recipe_entries()
    if name not in entries:
        return None
    return load_entry(entries[name])


def _evaluation_column(run_folder: Path, column: str, count: int) -> list[str]:
    """The first `count` non-empty values of a column of the run's predictions.csv (its
    evaluation rows, as the model saw them): what an export checks itself on."""
    import pandas as pd

    predictions = run_folder / "predictions.csv"
    if not predictions.is_file():
        return []
    values = pd.read_csv(predictions, keep_default_na=False)[column].astype(str).tolist()
    return [value for value in values if value][:count]


def _readme(run_folder: Path, info: Any, labels: list[str], checks: dict, redact_pii: bool) -> str:
    same = checks["merged_vs_adapter_same_base"]
    trained = checks["merged_vs_trained_run"]
    lines = [
        "# Merged classifier (finetune export)",
        "",
        f"Exported from run `{run_folder}`: backbone `{info.backbone}` with its LoRA adapter "
        f"merged in, {info.pooling} pooling, a linear head over {len(labels)} labels.",
        *_usage_lines("merged backbone"),
        f"- Merged vs the adapter on the same full-precision base ({checks['texts']} texts, "
        f"fp32): max |probability difference| {same['max_abs_diff']:.2e}, "
        f"label agreement {same['label_agreement']:.1%}.",
        f"- Merged vs the run as trained: max |probability difference| "
        f"{trained['max_abs_diff']:.2e}, label agreement {trained['label_agreement']:.1%}.",
    ]
    if "serves" in checks:
        lines += [
            "",
            f"The run serves `{checks['serves']}` (chosen on its validation rows), and so does "
            "`predict.py`: `delivered.joblib` holds the parts it adds to the merged model "
            f"(scikit-learn {checks['scikit_learn']}, the version that wrote it, and joblib "
            "needed). `load(folder, served=False)` gives the fine-tuned model's own "
            "probabilities.",
            *_served_lines(checks),
        ]
    return "\n".join(lines + _notes(info, redact_pii, merged=True)) + "\n"


def _probe_readme(
    run_folder: Path, info: Any, labels: list[str], checks: dict, redact_pii: bool
) -> str:
    lines = [
        "# Frozen backbone and linear probe (finetune export)",
        "",
        f"Exported from run `{run_folder}`, which serves its frozen probe (`embedding_logreg`, "
        "chosen on its validation rows) rather than its fine-tuned model: backbone "
        f"`{info.backbone}` as pretrained (without the run's LoRA adapter), {info.pooling} "
        f"pooling, and the probe's logistic regression as the linear head over {len(labels)} "
        "labels. The fine-tuned adapter stays in the run folder.",
        *_usage_lines("pretrained backbone"),
        f"- `predict.py` against the run's served probabilities ({checks['texts']} texts): "
        + _difference(checks.get("served_vs_run")),
    ]
    if "scikit_learn" in checks:
        lines += [
            "",
            "The run calibrates the probe's probabilities: `delivered.joblib` holds that map "
            f"(scikit-learn {checks['scikit_learn']}, the version that wrote it, and joblib "
            "needed). `load(folder, served=False)` gives the probe's uncalibrated probabilities.",
        ]
    return "\n".join(lines + _notes(info, redact_pii, merged=False)) + "\n"


def _usage_lines(backbone: str) -> list[str]:
    """A text export's README: how to use it, what it holds, and the checks' heading."""
    return [
        "",
        "## Use it",
        "",
        "```bash",
        'python predict.py "where is my parcel?"',
        "```",
        "",
        "```python",
        f"from transformers import AutoModel  # the {backbone} alone",
        "backbone = AutoModel.from_pretrained('.')",
        "# pooling + head: see predict.py (load(folder) -> labels, predict_proba)",
        "```",
        "",
        f"Files: `model.safetensors` + `config.json` ({backbone}, fp32), tokenizer files, "
        "`head.safetensors`, `classifier.json` (pooling, labels, max_length), `predict.py`, "
        "`export.json` (the checks below), `training_config.yaml`.",
        "",
        "## Checks on the run's evaluation texts",
        "",
    ]


def _served_lines(checks: dict) -> list[str]:
    served = checks.get("served_vs_run")
    return [f"Against the run's served probabilities: {_difference(served)}"] if served else []


def _difference(agreement: dict[str, float] | None) -> str:
    if not agreement:
        return "not checked (no evaluation texts)."
    return (
        f"max |difference| {agreement['max_abs_diff']:.2e}, label agreement "
        f"{agreement['label_agreement']:.1%}."
    )


def _notes(info: Any, redact_pii: bool, merged: bool) -> list[str]:
    """A text export's README: the redaction, precision and quantization the run used;
    `merged`: the folder holds the adapter merged onto the base, else the base alone."""
    lines = []
    if info.quant != "none":
        lines += [
            "",
            f"The run's backbone was {info.quant} (bitsandbytes). "
            + (
                "The adapter was merged onto the **full-precision base weights**, not the "
                f"dequantized {info.quant} ones, so this model has no quantization rounding"
                if merged
                else "This folder holds the full-precision weights"
            )
            + "; its predictions differ from the quantized run by the quantization error "
            "shown above.",
        ]
    if redact_pii:
        lines += [
            "",
            "The run redacted e-mails, phone numbers and card numbers before training, so "
            "`predict.py` redacts every text the same way first, with `pii.py` (the "
            "toolkit's redactor, standard library only).",
        ]
    if info.bf16:
        lines += [
            "",
            "The run predicted under bf16 autocast; this export and the checks run in fp32.",
        ]
    return lines


GENERATOR_CHECK_PROMPTS = 8  # evaluation prompts decoded by both the run and the export
GENERATOR_CHECK_TOKENS = 32  # new tokens per reply in that check


def export_merged_generator(
    run_folder: str | Path,
    output: str | Path,
    overwrite: bool = False,
    note: str | None = None,
    serve: str = "model",
) -> dict[str, Any]:
    """A generation run's LoRA merged into its causal LM: a folder that
    `AutoModelForCausalLM.from_pretrained` and `pipeline("text-generation")` load as it is,
    with `reply.py`, which serves replies as the run did (reply_export.py): the model's, or
    with `serve` one of SERVABLE the retrieved reply.

    Merged onto the full-precision base (as for classifiers); the check decodes a few of the
    run's evaluation messages greedily with the run's adapter (the prompts the run built) and
    with the written folder's reply.py, and counts identical replies; a folder that serves
    retrieval also counts reply.py's served replies equal to the run's retrieval."""
    from finetune.modeling.generation import RetrievedReplies, generate

    run_folder, output = Path(run_folder), Path(output)
    _check_output(run_folder, output, overwrite)
    adapted, tokenizer, info = _full_precision_generator(run_folder / "adapter")
    prompts = _evaluation_column(run_folder, "prompt", GENERATOR_CHECK_PROMPTS)
    built, tokens = prompts, GENERATOR_CHECK_TOKENS
    retrieved = RetrievedReplies.load(run_folder, 8, "cpu")
    if retrieved is not None and not retrieved.in_prompts:
        retrieved = None
    if retrieved is not None:  # the prompts as the run wrote them
        built = retrieved.prompts(prompts, info.system)
    before = generate(adapted, tokenizer, built, tokens, 8, system=info.system).texts
    config_file = run_folder / "config.yaml"
    run_config = _run_config(run_folder)
    redact = bool((run_config.get("data") or {}).get("redact_pii"))
    conversations = [conversation_text(p) for p in prompts]
    if redact:  # as the run serves replies
        before = pii.redact_replies(before, conversations)[0]
    merged = adapted.backbone.merge_and_unload()
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.generation_config.do_sample = False
    with staged(output) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        options = run_config.get("options") or {}
        in_prompts = retrieved is not None
        write_reply_kit(tmp, run_folder, info.system, options, redact, in_prompts, serve, note)
        after = exported_replies(tmp, prompts, tokens)
        checks = {
            "prompts": len(prompts),
            "same_text": sum(a == b for a, b in zip(before, after, strict=True)),
            "max_new_tokens": tokens,
            "run_quant": info.quant,
            "retrieved_reply": retrieved is not None,
            "redact_pii": redact,
            "serves": serve,
        }
        if serve in SERVABLE:  # what reply.py serves: the run's retrieved replies
            run_served = _evaluation_column(run_folder, serve, len(prompts))
            if redact:
                run_served = pii.redact_replies(run_served, conversations)[0]
            served = exported_replies(tmp, prompts, tokens, serve)
            checks["same_served"] = sum(a == b for a, b in zip(served, run_served, strict=True))
        readme = _generator_readme(run_folder, info, checks, note)
        write_texts(tmp, {"export.json": json.dumps(checks, indent=2), "README.md": readme})
        if config_file.is_file():
            shutil.copy(config_file, tmp / "training_config.yaml")
    return checks


def _full_precision_generator(adapter: Path) -> tuple[Any, Any, Any]:
    """(the adapter on the full-precision base: what is merged, its tokenizer, its info)."""
    from peft import PeftModel

    from finetune.modeling.generation import (
        CausalLM,
        GeneratorInfo,
        load_causal_lm,
        load_generator,
    )
    from finetune.modeling.models import load_tokenizer, read_info

    info = read_info(adapter, "generator", GeneratorInfo)
    if info.quant == "none":
        return load_generator(adapter)
    tokenizer = load_tokenizer(str(adapter))
    base = load_causal_lm(info.backbone, "none", False, info.trust_remote_code)
    return CausalLM(PeftModel.from_pretrained(base, str(adapter))).eval(), tokenizer, info


def _generator_readme(run_folder: Path, info: Any, checks: dict[str, Any], note: str | None) -> str:
    served = ["greedy decoding"]
    if checks["retrieved_reply"]:
        served.insert(0, "the reply to the most similar training message in the system turn")
    if checks["serves"] in SERVABLE:  # the model lost to retrieval: reply.py serves that
        served = [
            f"{SERVED_AS[checks['serves']]}, in the model's place "
            "(`load(serve='model')` for the model's own replies)",
        ]
    if checks["redact_pii"]:
        served = [
            "PII redaction of the messages",
            *served,
            "PII redaction of the replies, with any number of 5 digits or more the "
            "conversation did not give replaced",
        ]
    lines = [
        "# Merged chat model (finetune export)",
        "",
        f"Exported from run `{run_folder}`: `{info.backbone}` with its LoRA adapter merged in "
        "(full-precision weights). A plain causal LM: no finetune-kit code is needed.",
        "",
        "To serve replies as the run did (" + ", ".join(served) + "), use `reply.py` (torch, "
        "transformers and numpy only"
        + (", and sacrebleu" if checks["serves"] == "retrieval_consensus" else "")
        + "):",
        "",
        "```bash",
        'python reply.py "how do I cancel my order?"',
        "```",
        "",
        "```python",
        "from reply import load",
        "",
        "reply = load()  # or load(folder)",
        "print(reply(['how do I cancel my order?'])[0])",
        "```",
        "",
        "The folder also loads as it is (`AutoModelForCausalLM.from_pretrained('.')`, "
        "`pipeline('text-generation', model='.')`), but then the prompt is yours to build: "
        "the run trained every reply after the system turn in `reply.json`"
        + (
            ", with a retrieved reply after it (see `reply.py`)"
            if checks["retrieved_reply"]
            else ""
        )
        + ".",
        "",
        *([note, ""] if note else []),
        f"Check: greedy replies ({checks['max_new_tokens']} new tokens) of `reply.py` and of the "
        f"run's adapter agree on {checks['same_text']} of {checks['prompts']} of the run's "
        "evaluation messages"
        + (
            f"; its served replies equal the run's retrieval on {checks['same_served']}."
            if "same_served" in checks
            else "."
        ),
    ]
    if info.quant != "none":
        lines += [
            "",
            f"The run trained on a {info.quant} backbone; the adapter was merged onto the "
            "full-precision base weights, so replies can differ from the quantized run's.",
        ]
    if checks["prompts"] == 0:
        lines += ["", "The run folder held no evaluation prompts to check with."]
    return "\n".join(lines) + "\n"
