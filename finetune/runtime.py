"""The process a run happens in: its CPU settings (applied by the `finetune` command when it
starts) and the description of its environment every run folder records (`environment.json`).

The CPU settings are environment variables that OpenMP and oneDNN read once, when torch
loads them, so they must be set before anything imports torch: the command sets them first
thing; a notebook or script that wants them calls `configure()` before importing torch. An
explicit setting in the environment always wins. Measured reasons: docs/benchmarks.md, "CPU
threads and kernel caches".
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

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
    """Set the CPU settings above (unless already set), `quiet_libraries`, and console
    streams that escape what their encoding cannot hold. The command line calls it first;
    the Python API leaves the environment and the streams alone."""
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    quiet_libraries()
    for stream in (sys.stdout, sys.stderr):
        # A Chinese label or path on a console whose code page cannot hold it (ASCII, a
        # Western Windows code page) is written as escapes, never a crash after training.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def quiet_libraries() -> None:
    """Quiet two harmless messages no user can act on: bitsandbytes' kernel-hub miss ("Failed
    to load CPU gemm_4bit_forward"), before it is first imported, and the deprecation
    transformers raises whenever peft wraps a model (peft reads `is_gradient_checkpointing`).
    The engine's model code calls it when imported, so the Python API is quiet too."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )


# Package versions every run folder records.
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "scikit-learn",
    "numpy",
    "pandas",
    "datasets",
    "finetune-kit",
)


def warn_now(*warnings: str) -> None:
    """Say `warnings` while the run goes on (before training), not only in its report."""
    for warning in warnings:
        print(f"Warning: {warning}")


def peak_memory_mb(children: bool = False) -> float:
    """Peak resident memory of this process; with `children`, of it or of the largest
    process it started and waited for (folds trained in worker processes)."""
    try:
        import resource
    except ImportError:  # Windows has no getrusage: the peak working set, of this process
        import psutil

        memory = psutil.Process().memory_info()
        return getattr(memory, "peak_wset", memory.rss) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if children:
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    # ru_maxrss counts KiB on Linux and bytes on macOS.
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def environment(device: str, seed: int) -> dict[str, Any]:
    import torch

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **_cpu(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "seed": seed,
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
        "packages": versions,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return info


# What decides a CPU run's speed beyond the processor's name (wide vectors, bf16 kernels): two
# machines that report the same name can differ in them, and in speed.
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The processor's name; on Linux also its family and model and its CPU_FEATURES."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's
    except OSError:
        return {"processor": platform.processor()}
    flags = set(fields.get("flags", "").split())
    return {
        "processor": fields.get("model name") or platform.processor(),
        "cpu_model": f"family {fields.get('cpu family')} model {fields.get('model')}",
        "cpu_features": [feature for feature in CPU_FEATURES if feature in flags],
    }
