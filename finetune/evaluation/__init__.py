"""Evaluation: how a model is judged, the same way for every recipe and method.

Metrics (`metrics`, also a local `evaluate` module under `metric_modules/`), the baselines
fitted beside the model (`baselines`; `table_baselines` on a table's raw columns),
cross-validation folds and the summary of their spread (`folds`), and what a recipe's own
evaluation hook receives (`context`).
"""
