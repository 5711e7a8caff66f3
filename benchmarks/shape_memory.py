"""Memory left behind by varied batch shapes, with and without the engine's two remedies.

The figures measured with these commands are in docs/benchmarks.md ("Memory"):

    python benchmarks/shape_memory.py                        # widths 5-60 tokens: 1,595 MB
    python benchmarks/shape_memory.py --fixed                # one width (30): 625 MB
    python benchmarks/shape_memory.py --trim                 # malloc_trim every 10 steps: 1,042 MB
    python benchmarks/shape_memory.py --trim --round 8       # and widths rounded to 8: 568 MB

300 LoRA steps (batch 32, bf16 where the CPU has it) of the customer-service model with LoRA
on the top 2 layers, fed random states of random widths, as training on cached lower-layer
states is. Prints the process's resident memory (VmRSS) every 100 steps and at the end. It
bypasses the training loop, so the remedies are applied here by hand: --round is what
`inference.PAD_MULTIPLE` does to real batches, --trim what `heap.release_free_heap` does every
`train.RELEASE_EVERY` steps.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path


def resident_mb() -> int:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fixed", action="store_true", help="every batch 30 tokens wide")
    parser.add_argument("--round", type=int, default=1, help="round widths up to a multiple")
    parser.add_argument("--trim", action="store_true", help="malloc_trim every 10 steps")
    args = parser.parse_args()

    import torch

    from finetune.modeling import models
    from finetune.modeling.classifiers import build_for_training
    from finetune.modeling.heap import release_free_heap
    from recipes.customer_service import recipe

    config = recipe.config(model={"lora_layers": 2, "head_init": "random"})
    bf16 = models.use_bf16(config.train.precision, "cpu")
    model, _, info = build_for_training("text", config, 77, bf16, "cpu")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    rng = random.Random(0)
    print(f"start: {resident_mb()} MB", flush=True)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        width = 30 if args.fixed else rng.randint(5, 60)
        width = -(-width // args.round) * args.round
        states = torch.randn(32, width, info.hidden_size)
        mask = torch.ones(32, width, dtype=torch.long)
        with models.autocast("cpu", bf16):
            logits = model(states=states, attention_mask=mask)
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.randint(0, 77, (32,)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.trim and step % 10 == 0:
            release_free_heap()
        if step % 100 == 0:
            print(f"step {step}: {resident_mb()} MB", flush=True)
    print(f"end: {resident_mb()} MB after {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    from finetune import runtime

    runtime.configure()  # the command's CPU settings, inherited by worker processes
    main()
