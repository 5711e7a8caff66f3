"""What a recipe's own evaluation hook sees once the model and the baselines are scored.

`Recipe.extra_report` and `Recipe.save_files` receive an `EvalContext`: the data, the label
order, every method's evaluation probabilities, the fine-tuned model as a function of texts,
and what the baselines fitted. A recipe hands back plots and per-method figures through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.config import Config
from finetune.data.tables import Examples

if TYPE_CHECKING:
    import numpy as np


@dataclass
class EvalContext:
    """What a recipe's extra evaluation may look at once the model and baselines are scored."""

    config: Config
    train: Examples  # all training rows (before the validation hold-out)
    evaluation: Examples
    labels: list[str]
    y_eval: np.ndarray  # label ids of the evaluation rows
    # Class probabilities on the evaluation rows by method: the fine-tuned model under
    # finetune.evaluation.metrics.MODEL_NAME (also `model_scores`), each baseline under its name.
    scores: dict[str, np.ndarray]
    # The fine-tuned model on any texts (e.g. extra candidates for a ranking metric), or on
    # Examples (a run with side features reads their table columns too), prepared as in
    # training (redacted when the run redacts), like `Run.predict_proba`.
    predict_proba: Callable[[list[str] | Examples], np.ndarray]
    # What baselines left in BaselineInputs.fitted (fitted models, to score extra candidates).
    fitted: dict[str, object] = field(default_factory=dict)
    # Extra plots: file name -> function drawing it to the given path; the engine calls each
    # one into the run's plots/ folder, so a report section can show plots/<name>.
    plots: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    # Extra figures per method (MODEL_NAME or a baseline's name -> figure name -> value),
    # e.g. a ranking metric: the engine adds them to that method's entry in metrics.json, so
    # a recipe's `primary_metric` can be one of them.
    method_metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    # The fine-tuned classifier and its inputs (e.g. to read a wide part's weights); None
    # where a caller builds a context without them.
    model: Any = None
    model_inputs: Any = None

    @property
    def model_scores(self) -> np.ndarray:
        """The fine-tuned model's class probabilities on the evaluation rows."""
        # Imported here: the metrics module loads scikit-learn, which `finetune --help` must not.
        from finetune.evaluation.metrics import MODEL_NAME

        return self.scores[MODEL_NAME]
