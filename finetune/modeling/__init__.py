"""Modeling: backbones, LoRA and quantization, and how examples become model input.

Text classifiers (`models`), image classifiers (`vision`), the inputs of each kind (`inputs`)
and the classifier of a run's kind (`classifiers`), batched forward passes (`inference`),
running a backbone's layers in two parts and caching the lower part (`layersplit`, `layercache`),
glibc heap trimming (`heap`), what a reply run can serve in its model's place (`retrieval`),
and the standalone merged export of a run (`export`, with `served_calibration`: the
calibration map as its predict.py applies it).
Builds on `finetune.data`; knows nothing of training loops, metrics or reports.
"""
