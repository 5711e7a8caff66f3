"""Customer service: which intent is this customer message? (multiclass text classification)
And, with `--task reply`, what to answer (reply generation: recipes/customer_service_replies.py).

Data: a table with a text column and a label column; default the bundled `shop_intents`
dataset (see finetune/cards/shop_intents.md), or `--dataset chinese_reviews` (Chinese review
sentiment, finetune/cards/chinese_reviews.md); the reply task's default is the bundled Bitext
pairs (finetune/cards/bitext.md). Messages are redacted (emails, phone numbers, card numbers)
before the model or any baseline sees them; for replies, the replies are too.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from finetune.config import Config, Preset, deep_update, resolve
from finetune.data.tables import load_examples
from finetune.errors import UserError
from finetune.recipe import POSITIVE_LABEL, Flag, Recipe, Splits, bundled_dataset
from recipes import customer_service_replies as replies

# Bundled datasets by card name: their folder under recipes/data (train.csv, test.csv).
DATASETS = {"shop_intents": "customer_service", "chinese_reviews": "chinese_reviews"}


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
    presets = {
        # The mpnet pack (`finetune models fetch mpnet`) with LoRA on its top layers over
        # cached lower ones, blended with the TF-IDF baseline where validation prefers it;
        # chosen on a hold-out of Banking77's train file only (docs/models.md, "The accurate
        # preset").
        "accurate": Preset(
            "all-mpnet-base-v2 pack, LoRA on its top 2 layers over cached lower layers, "
            "blended with the TF-IDF baseline when the validation rows prefer it",
            {
                "model": {"name": "mpnet", "lora_layers": 2},
                "train": {"epochs": 3, "batch_size": 32, "learning_rate": 1e-3},
                "eval": {"blend": ["tfidf_logreg"]},
            },
        ),
    }
    baselines = ("tfidf_logreg", "embedding_logreg")
    # Macro-F1: intents are many, and one-vs-rest AUC is near 1 for every method on them.
    primary_metric = "f1"
    datasets = (*DATASETS, *replies.DATASETS)
    Options = replies.CustomerServiceOptions
    generation = True  # `--task reply`; adds the `chat` command
    flags = (
        # Two-intent data (e.g. complaint / other) reports the recall and AUC of this label.
        POSITIVE_LABEL,
        Flag(
            "--dataset",
            "options.dataset",
            f"Bundled dataset: {', '.join(DATASETS)}; reply task: {', '.join(replies.DATASETS)}.",
        ),
        Flag("--task", "options.task", "intent (classify messages, default) or reply."),
        Flag("--prompt-column", "options.prompt_column", "Reply task: message column."),
        Flag("--response-column", "options.response_column", "Reply task: reply column."),
    )

    def card(self, config: Config) -> dict[str, Any] | None:
        """The bundled dataset's card (its positive class) for runs on bundled data."""
        if config.options is not None and config.options.task == "reply":
            return None  # the reply task's card (bitext) describes pairs, not classes
        if config.data.path is not None:
            return None
        from finetune.data.cards import find_card, read_card

        path = find_card(self._dataset(config))
        return None if path is None else {**read_card(path)[0], "_file": str(path)}

    def config(
        self,
        yaml_path: str | Path | None = None,
        quick: bool = False,
        preset: str | None = None,
        **overrides: Any,
    ) -> Config:
        """The intent task's config, or (task reply) the reply task's defaults instead."""
        config = self.layered(yaml_path, quick=quick, preset=preset, **overrides)
        if config.options.task == "intent":
            return self.refuse_unused(config)
        if config.options.task != "reply":
            raise UserError(f"--task must be intent or reply, got '{config.options.task}'.")
        if config.preset is not None:
            raise UserError(
                f"--preset {config.preset} is for the intent task; the reply task has no presets."
            )
        defaults = replies.DEFAULTS
        config = resolve(self.name, defaults, yaml_path, overrides, options=self.Options())
        if config.data.path is None:  # a bundled dataset's own defaults, under the user's
            dataset = bundled_dataset(config.options.dataset, replies.DATASETS, "reply")
            defaults = deep_update(defaults, replies.DATASETS[dataset])
        defaults = deep_update(defaults, replies.QUICK) if quick else defaults
        config = resolve(self.name, defaults, yaml_path, overrides, options=self.Options())
        return self.refuse_unused(config)

    def default_model(self) -> str:
        return f"{super().default_model()} (reply task: {replies.DEFAULTS['model']['name']})"

    def unused(self, config: Config) -> dict[str, str]:
        """The reply task reads none of the classifier's own options, the intent task none of
        the reply task's."""
        if config.options.task == "reply":
            return {**super().unused(config), **replies.UNUSED}
        why = "it is an option of the reply task: add --task reply."
        return {**super().unused(config), **{f"options.{o}": why for o in replies.REPLY_OPTIONS}}

    def train(self, config: Config | None = None, show_progress: bool = True) -> Any:
        config = config or self.config()
        if config.options.task == "reply":
            return replies.train(self.refuse_unused(config), show_progress=show_progress)
        return super().train(config, show_progress=show_progress)  # which refuses them too

    def load(self, folder: str | Path) -> Any:
        from finetune.generation import is_generation_run, load_generation_run

        if is_generation_run(self.own_run(folder)):
            return load_generation_run(folder)
        return super().load(folder)

    def split(self, config: Config) -> Splits:
        if config.data.path is not None:
            return super().split(config)
        name = self._dataset(config)
        folder = files("recipes") / "data" / DATASETS[name]
        # The bundled files always use text/label, whatever columns the user's own data has.
        train = load_examples(folder / "train.csv", "text", "label")
        test = load_examples(folder / "test.csv", "text", "label")
        train.source, test.source = f"{name} train", f"{name} test"
        return self.complete_split(config, train, test)

    def _dataset(self, config: Config) -> str:
        return bundled_dataset(config.options.dataset, DATASETS, "intent")


recipe = CustomerService()
