"""Training: the loop that fits a classifier's LoRA weights and head (`loop`), and its
resumable checkpoints (`checkpoint`). Builds on `finetune.modeling`; the validation figures
that pick the kept epoch are handed in by the caller (they are `finetune.evaluation`'s).
"""
