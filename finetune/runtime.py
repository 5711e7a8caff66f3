"""Process-wide settings for torch on a CPU, applied by the `finetune` command when it starts.

They are environment variables that OpenMP and oneDNN read once, when torch loads them, so
they must be set before anything imports torch: the command sets them first thing; a notebook
or script that wants them calls `configure()` before importing torch. An explicit setting in
the environment always wins. Measured reasons: docs/benchmarks.md, "CPU threads and kernel
caches".
"""

from __future__ import annotations

import logging
import os

SETTINGS = {
    # OpenMP threads that spin while they wait for a busy core make torch's two threads far
    # slower than one on a shared CPU; sleeping waiters do not.
    "OMP_WAIT_POLICY": "PASSIVE",
    # oneDNN caches one compiled kernel per input shape, each with its own copy of the weights;
    # length-grouped batches come in dozens of shapes, so 8 entries save memory at no
    # measurable speed.
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8",
}


def configure() -> None:
    """Set the CPU settings above (unless already set) and quiet bitsandbytes' harmless
    kernel-hub miss ("Failed to load CPU gemm_4bit_forward") before it is first imported."""
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
