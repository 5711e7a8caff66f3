"""finetune-kit: LoRA / QLoRA fine-tuning recipes for vertical startup use cases.

The engine lives here (config, data, models, train, metrics, baselines, report, run, cli);
the verticals live in the `recipes` package. Importing this package is cheap (no torch).
"""

import logging

__version__ = "0.1.0"

# bitsandbytes logs a harmless kernel-hub miss ("Failed to load CPU gemm_4bit_forward") when it
# is first imported on CPUs with AVX512-BF16; silence it before anything can import it.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
