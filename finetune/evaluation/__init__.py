"""Evaluation: how a model is judged, the same way for every recipe and method.

Metrics (`metrics`, also a local `evaluate` module under `metric_modules/`), the baselines
fitted beside the model (`baselines`), cross-validation folds and their summary (`folds`), and
what a recipe's own evaluation hook receives (`context`).
"""
