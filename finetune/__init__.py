"""finetune-kit: LoRA / QLoRA fine-tuning recipes for vertical startup use cases.

The engine lives here, in layers that import only downwards (checked by `lint-imports`):
`cli` > `recipe`, `crossval`, `run` (the recipe API and run orchestration) > `reporting` >
`evaluation` > `training` > `modeling` > `data` > `config`, `registry`, `files`, `markdown`
> `errors`. The verticals live in the `recipes` package. Importing this package is cheap (no
torch) and changes nothing in the process: the `finetune` command applies its CPU settings
when it starts (`finetune.runtime`).
"""

__version__ = "0.1.0"
