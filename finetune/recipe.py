"""What a recipe is: the *what* of a vertical (data, example format, defaults, baselines).

A recipe subclasses `Recipe`, names itself, points at its bundled data and sets the defaults
that differ from the engine's. Everything about *how* (models, LoRA, quantization, training,
metrics, reports) is the engine's, so `train`, `load` and the CLI are inherited, not written.
Importing this module stays cheap: torch is only imported when a method runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.config import Config, resolve
from finetune.data import Examples, load_examples
from finetune.errors import UserError

if TYPE_CHECKING:
    from finetune.run import Run


class Recipe:
    name: str = ""  # CLI sub-command, e.g. "customer-service"
    title: str = ""
    description: str = ""
    # Engine options this recipe changes, as a nested mapping (sections data, model, train).
    defaults: dict[str, Any] = {}
    # Names from finetune.baselines.BASELINES, fitted and scored next to the model.
    baselines: tuple[str, ...] = ("tfidf_logreg", "embedding_logreg")

    def config(self, yaml_path: str | Path | None = None, **overrides: Any) -> Config:
        """The resolved config: engine < recipe defaults < YAML file < overrides (nested dicts)."""
        return resolve(self.name, self.defaults, yaml_path, overrides)

    def bundled(self, config: Config) -> tuple[Examples, Examples]:
        """The recipe's own (train, test) split, used when no --data is given."""
        raise UserError(f"The {self.name} recipe ships no dataset: pass --data PATH.")

    def read(self, path: str | Path, config: Config, labelled: bool = True) -> Examples:
        """Turn a user's file into examples (text + label). Recipes with tables override this."""
        label_column = config.data.label_column if labelled else None
        return load_examples(path, config.data.text_column, label_column)

    def train(self, config: Config | None = None, show_progress: bool = True) -> Run:
        from finetune.run import train

        return train(self, config or self.config(), show_progress=show_progress)

    def load(self, folder: str | Path) -> Run:
        from finetune.run import Run

        return Run.load(folder)
