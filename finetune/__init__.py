"""finetune-kit: LoRA / QLoRA fine-tuning recipes for vertical startup use cases.

The engine lives here (config, data, models, train, metrics, baselines, report, run, cli);
the verticals live in the `recipes` package. Importing this package is cheap (no torch).
"""

__version__ = "0.1.0"
