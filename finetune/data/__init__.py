"""Data: labelled examples in, checked and split, before any model is involved.

Tables (`tables`), data larger than memory (`columns`, `memmap`), image files (`images`),
tabular records rendered as text (`records`), PII redaction (`pii`) and data cards (`cards`).
The lowest engine layer: it imports only `finetune.config`, `finetune.errors` and the small
shared modules beside them, never a model.
"""
