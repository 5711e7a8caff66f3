"""One decoding step of the bundled chat model, by batch width: transformers' own key/value
cache against the engine's growing one (docs/benchmarks.md, "Decoding replies in rounds").

    python benchmarks/decode_step.py                      # widths 1 4 16 32 64, context 300
    python benchmarks/decode_step.py --widths 16 64 --context 500

For each width: the prompt pass (prefill) over `context` random token ids per row, then
`--steps` single-token steps with greedy next tokens, timed per step, with each cache. Run
it with nothing else on the cores.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.cache_utils import DynamicCache

    from finetune.modeling.kvcache import growing_cache
    from finetune.modeling.models import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.model)).eval()
    caches = {
        "transformers": lambda: DynamicCache(config=model.config),
        "growing": lambda: growing_cache(model.config, args.context + args.steps),
    }
    for width in args.widths:
        torch.manual_seed(0)
        ids = torch.randint(0, model.config.vocab_size, (width, args.context))
        row = {"width": width, "context": args.context}
        for name, make in caches.items():
            prefill, step = timed_steps(model, ids, make(), args.steps)
            row[f"{name}_prefill_s"], row[f"{name}_step_ms"] = round(prefill, 2), round(step, 1)
        row["tokens_per_s_growing"] = round(width / row["growing_step_ms"] * 1000, 1)
        print(json.dumps(row), flush=True)


def timed_steps(model, ids, cache, steps: int) -> tuple[float, float]:
    """Seconds of the prompt pass, and milliseconds per single-token step after it."""
    import torch

    with torch.no_grad():
        start = time.perf_counter()
        out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - start
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, cache=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
    return prefill, (time.perf_counter() - start) / steps * 1000


if __name__ == "__main__":
    main()
