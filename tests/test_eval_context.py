"""What a recipe's extra evaluation gets from the engine: the model on new texts, prepared as
in training, and a place for its own per-method figures (metrics.json, primary metric)."""

from __future__ import annotations

import json

import numpy as np

from finetune.data.pii import redact
from finetune.modeling.inference import predict_proba
from finetune.recipe import EvalContext
from recipes.customer_service import CustomerService

# An e-mail and a Luhn-valid card number; the second text has other ones in the same places.
PII_TEXTS = [
    "refund to anna.berg@example.com, card 4111 1111 1111 1111 asap",
    "refund to j.smith@mail.example.org, card 5500 0000 0000 0004 asap",
]


class Probing(CustomerService):
    """Customer service, scoring extra texts in its extra evaluation as ranking recipes do."""

    seen: dict = {}

    def extra_report(self, context: EvalContext):
        redacted = [redact(text)[0] for text in PII_TEXTS]
        self.seen["raw"] = context.predict_proba(PII_TEXTS)
        self.seen["redacted"] = context.predict_proba(redacted)
        context.method_metrics["tfidf_logreg"] = {"made_up_at_k": 0.25}
        context.method_metrics["fine-tuned (LoRA)"] = {"made_up_at_k": 0.5}
        return {}, []


def test_extra_evaluation_scores_texts_redacted_as_in_training(
    tiny_model_dir, small_csvs, tmp_path
):
    recipe = Probing()
    config = recipe.config(
        data={"path": str(small_csvs[0]), "eval_path": str(small_csvs[1])},
        model={"name": str(tiny_model_dir), "lora_r": 4},
        train={"max_steps": 2, "batch_size": 8, "precision": "fp32"},
        output=str(tmp_path / "run"),
    )
    assert config.data.redact_pii
    run = recipe.train(config, show_progress=False)
    raw, redacted = recipe.seen["raw"], recipe.seen["redacted"]
    # What the model receives is the redacted text: the raw texts score exactly like it, and
    # two texts that differ only in their e-mail and card number score the same.
    np.testing.assert_allclose(raw, redacted, atol=1e-6)
    np.testing.assert_allclose(raw[0], raw[1], atol=1e-6)
    np.testing.assert_allclose(raw, run.predict_proba(PII_TEXTS), atol=1e-6)
    # The model is sensitive to the unredacted text, so skipping redaction would show.
    unredacted = predict_proba(run.model, run.inputs.encode(PII_TEXTS), run.inputs, 8, "cpu", False)
    assert np.abs(unredacted - raw).max() > 1e-3
    # A recipe's own per-method figures join each method's entry in metrics.json.
    metrics = json.loads((run.folder / "metrics.json").read_text())
    assert metrics["made_up_at_k"] == 0.5
    assert metrics["baselines"]["tfidf_logreg"]["made_up_at_k"] == 0.25
    assert "made_up_at_k" not in metrics["baselines"]["embedding_logreg"]
    assert metrics["primary_metric"] == "f1"
