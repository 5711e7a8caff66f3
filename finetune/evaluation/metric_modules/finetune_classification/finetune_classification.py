"""finetune-kit's classification metrics as a Hugging Face `evaluate` module (local, offline).

The numbers are those of a finetune-kit run's report
(`finetune.evaluation.metrics.classification_metrics`): accuracy; for two classes the positive
class's recall, F1, precision, AUC, specificity and Brier score; otherwise macro recall, F1 and
precision (scikit-learn's macro semantics) and the macro one-vs-rest AUC.

    import evaluate
    from finetune.evaluation.metrics import evaluate_module_path

    metric = evaluate.load(evaluate_module_path())
    metric.compute(predictions=probabilities, references=label_ids, label_names=labels)

`predictions` are class probabilities, one row per example (pass `from_logits=True` to give a
`transformers.Trainer`'s logits as they come). An undefined figure (AUC when the references
hold one class) is None.
"""

# evaluate scans this file's imports to check they are installed: one import per line.
import datasets
import evaluate
import numpy as np

from finetune.evaluation.metrics import classification_metrics

# The headline figures and the binary extras; what a Trainer can log (numbers only).
FIGURES = ("accuracy", "recall", "f1", "precision", "auc", "specificity", "brier")


class FinetuneClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description=(
                "predictions: class probabilities (or logits with from_logits=True), one row "
                "per example; references: label ids; label_names: the class names in id order "
                "(default: the ids); positive: the positive class id of a two-class task "
                "(default 1); from_logits: apply a softmax to the predictions first."
            ),
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, label_names=None, positive=None, from_logits=False):
        scores = np.asarray(predictions, dtype=np.float64)
        if from_logits:
            # Row-wise softmax, shifted by the row maximum so large logits do not overflow.
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        names = list(label_names) if label_names is not None else None
        if names is None:
            names = [str(k) for k in range(scores.shape[1])]
        figures = classification_metrics(references, scores, names, positive=positive)
        return {name: figures[name] for name in FIGURES if name in figures}
