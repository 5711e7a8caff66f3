"""An exported reply run's `reply.py` against the run itself, on the run's own messages.

    finetune export --run RUN --output EXPORTED
    python benchmarks/exported_replies.py RUN EXPORTED                # 16 evaluation messages
    python benchmarks/exported_replies.py RUN EXPORTED --prompts 108

Loads `EXPORTED/reply.py` as a user without finetune-kit would (a fresh module, its own
loading), replies to the first N messages of the run's `predictions.csv` with the run's
settings (its cap on new tokens), and prints how many replies equal the run's own after the
same redaction `predict` applies, the seconds, and new tokens per second. Run it with nothing
else on the cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a reply run folder")
    parser.add_argument("exported", type=Path, help="its `finetune export` folder")
    parser.add_argument("--prompts", type=int, default=16)
    args = parser.parse_args()

    import pandas as pd

    from finetune.data.pii import redact_all

    table = pd.read_csv(args.run / "predictions.csv", keep_default_na=False).head(args.prompts)
    spec = importlib.util.spec_from_file_location("exported_reply", args.exported / "reply.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    start = time.perf_counter()
    reply = module.load(args.exported, serve="model")  # the model, whatever the run serves
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    replies = reply(table["prompt"].tolist())
    seconds = time.perf_counter() - start
    info = json.loads((args.exported / "reply.json").read_text(encoding="utf-8"))
    expected = table["generated"].tolist()
    if info["redact_pii"]:
        expected = redact_all(expected)[0]
    same = sum(a == b for a, b in zip(replies, expected, strict=True))
    tokenizer = module.AutoTokenizer.from_pretrained(args.exported)
    tokens = sum(len(tokenizer(text)["input_ids"]) for text in replies)
    print(
        json.dumps(
            {
                "prompts": len(replies),
                "same_as_run": same,
                "load_seconds": round(loaded, 1),
                "reply_seconds": round(seconds, 1),
                "reply_tokens_per_second": round(tokens / seconds, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
