"""Customer service: which intent is this customer message? (multiclass text classification)

Data: a table with a text column and a label column; default the bundled `shop_intents`
dataset (see finetune/cards/shop_intents.md). Messages are redacted (emails, phone numbers,
card numbers) before the model or any baseline sees them.
"""

from __future__ import annotations

from importlib.resources import files

from finetune.config import Config
from finetune.data.tables import load_examples
from finetune.recipe import POSITIVE_LABEL, Recipe, Splits

BUNDLED_DATA = files("recipes") / "data" / "customer_service"


class CustomerService(Recipe):
    name = "customer-service"
    title = "Customer service intent classification"
    description = "Intent classification of customer messages (train, evaluate, predict)."
    defaults = {
        "data": {"redact_pii": True, "max_length": 128},
        # LoRA on every layer. `--set model.lora_layers=3` trains twice as fast with less
        # memory but is less accurate on Banking77, so it is not the default
        # (docs/benchmarks.md, "Banking77 benchmark").
        "model": {"name": "minilm", "lora_r": 16, "head_init": "probe"},
        "train": {
            "epochs": 6,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "head_learning_rate": 1e-3,
            # The rare batch of long messages trains in pieces: one such batch alone raises
            # peak memory for the rest of the run (docs/benchmarks.md, "Memory").
            "max_batch_tokens": 1024,
        },
    }
    baselines = ("tfidf_logreg", "embedding_logreg")
    # Macro-F1: intents are many, and one-vs-rest AUC is near 1 for every method on them.
    primary_metric = "f1"
    datasets = ("shop_intents",)
    # Two-intent data (e.g. complaint / other) reports the recall and AUC of this label.
    flags = (POSITIVE_LABEL,)

    def split(self, config: Config) -> Splits:
        if config.data.path is not None:
            return super().split(config)
        # The bundled files always use text/label, whatever columns the user's own data has.
        train = load_examples(BUNDLED_DATA / "train.csv", "text", "label")
        test = load_examples(BUNDLED_DATA / "test.csv", "text", "label")
        train.source, test.source = "shop_intents train", "shop_intents test"
        return self.complete_split(config, train, test)


recipe = CustomerService()
