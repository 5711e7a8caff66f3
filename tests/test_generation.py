"""The generation task: response-only labels, training on the shared loop, the run folder,
reload, and text metrics equal to their reference packages."""

from __future__ import annotations

import json
import re

import generation_recipe as recipe
import pandas as pd
import pytest
import torch

from finetune.data.pairs import Pairs
from finetune.errors import UserError


@pytest.fixture(scope="module")
def chat_dir(tiny_llama_dir, tmp_path_factory):
    return recipe.chat_model(tiny_llama_dir, tmp_path_factory.mktemp("chat") / "model")


@pytest.fixture(scope="module")
def trained(chat_dir, tmp_path_factory):
    from finetune.generation import train_generation

    data = recipe.pairs()
    output = tmp_path_factory.mktemp("runs") / "gen"
    return train_generation(recipe.config(chat_dir, output), data, data, data, max_new_tokens=8)


def test_labels_cover_the_response_tokens_only(chat_dir):
    from finetune.modeling.generation import IGNORE, ChatInputs
    from finetune.modeling.models import load_tokenizer

    tokenizer = load_tokenizer(str(chat_dir))
    inputs = ChatInputs(tokenizer, 32)
    pairs = [("refund me now", "money back please"), ("I cannot log in", "forgot my password")]
    items = inputs.encode_pairs([p for p, _ in pairs], [r for _, r in pairs])
    batch = inputs.collate(items)
    for row, (prompt, response) in enumerate(pairs):
        labels = batch["labels"][row]
        n_prompt = len(tokenizer.tokenize(prompt)) + 1  # BOS, then the prompt's words
        assert labels[:n_prompt].eq(IGNORE).all()
        words = tokenizer.convert_ids_to_tokens(labels[labels != IGNORE].tolist())
        # The assistant span: the response's words, then EOS; no padding.
        assert words == [*response.split(), tokenizer.eos_token]
    assert batch["labels"][batch["attention_mask"] == 0].eq(IGNORE).all()


def test_loss_is_the_response_tokens_cross_entropy(chat_dir):
    """The task's loss equals cross-entropy over the response positions alone (not the prompt,
    not the padding), computed by hand from the logits."""
    from transformers import AutoModelForCausalLM

    from finetune.modeling.generation import ChatInputs, GenerationTask
    from finetune.modeling.models import load_tokenizer

    tokenizer = load_tokenizer(str(chat_dir))
    inputs = ChatInputs(tokenizer, 32)
    model = AutoModelForCausalLM.from_pretrained(str(chat_dir))
    prompts, responses = ["refund me now", "where is my parcel"], ["money back please", "ok"]
    items = inputs.encode_pairs(prompts, responses)
    loss = GenerationTask(inputs, 4, "cpu", False).loss(model, items, torch.zeros(2)).item()
    batch = inputs.collate(items)
    with torch.no_grad():
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    terms = [
        torch.nn.functional.cross_entropy(logits[row, t - 1], torch.tensor(ids[t])).item()
        for row, (ids, n_prompt) in enumerate(items)
        for t in range(n_prompt, len(ids))
    ]
    assert loss == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    # Validation loss per response token, in batches of one row: the same mean.
    figures = GenerationTask(inputs, 1, "cpu", False).figures(model, items)
    assert figures["val_loss"] == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_the_output_layer_runs_on_response_positions_only(chat_dir):
    """The loss computes logits only where a response token is predicted, and its gradients are
    those of the model's own loss over full logits."""
    from transformers import AutoModelForCausalLM

    from finetune.modeling.generation import IGNORE, CausalLM, ChatInputs, GenerationTask
    from finetune.modeling.models import load_tokenizer

    tokenizer = load_tokenizer(str(chat_dir))
    inputs = ChatInputs(tokenizer, 32)
    torch.manual_seed(0)
    model = CausalLM(AutoModelForCausalLM.from_pretrained(str(chat_dir)))
    items = inputs.encode_pairs(["refund me now", "where is my parcel"], ["money back", "ok"])
    batch = inputs.collate(items, True)
    seen = []
    head = model.backbone.get_output_embeddings()
    handle = head.register_forward_hook(lambda _, args, out: seen.append(tuple(out.shape)))
    GenerationTask(inputs, 4, "cpu", False).loss(model, items, torch.zeros(2)).backward()
    handle.remove()
    n_response = int((batch["labels"] != IGNORE).sum())
    assert seen == [(n_response, model.backbone.config.vocab_size)]
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model(**batch).loss.backward()
    seen_full = {name: p.grad for name, p in model.named_parameters()}
    for name, grad in ours.items():
        torch.testing.assert_close(grad, seen_full[name], rtol=1e-4, atol=1e-6)


def test_generation_run_trains_writes_and_reloads(trained, chat_dir):
    from finetune.modeling.generation import ChatInputs, generate, load_generator
    from finetune.modeling.models import load_tokenizer

    history = trained.metrics["train"]["history"]
    assert history[-1]["val_loss"] < 0.5 * history[0]["val_loss"]  # memorised
    # Training throughput in tokens: every step is the whole set (6 pairs, batches of 6).
    data, train = recipe.pairs(), trained.metrics["train"]
    inputs = ChatInputs(load_tokenizer(str(chat_dir)), 32)
    per_step = sum(inputs.lengths(inputs.encode_pairs(data.prompts, data.responses)))
    stepped = train["tokens_per_second"] * train["train_seconds"]
    assert stepped == pytest.approx(train["steps"] * per_step)
    folder = trained.folder
    for name in ("config.yaml", "metrics.json", "predictions.csv", "report.md", "environment.json"):
        assert (folder / name).is_file()
    metrics = json.loads((folder / "metrics.json").read_text())["generation"]
    assert set(metrics) == {"rougeL", "chrf", "tokens_per_second", "n"} and metrics["n"] == 6
    assert metrics["rougeL"] > 0.5  # it learnt the responses
    table = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    assert table["generated"].tolist() == trained.generated
    assert "ROUGE-L F" in (folder / "report.md").read_text()
    model, tokenizer, _ = load_generator(folder / "adapter")
    again = generate(model, tokenizer, table["prompt"].tolist(), 8, batch_size=4)
    assert again.texts == trained.generated  # other batch size, same greedy text


def test_metrics_equal_the_reference_packages():
    import sacrebleu
    from rouge_score import rouge_scorer

    from finetune.evaluation.text_metrics import text_metrics

    generated = ["the parcel is late", "money back", ""]
    references = ["your parcel is late today", "money back please", "sorry"]
    got = text_metrics(generated, references, new_tokens=10, seconds=2.0)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = zip(generated, references, strict=True)
    rouge = [scorer.score(r, g)["rougeL"].fmeasure for g, r in pairs]
    assert got["rougeL"] == pytest.approx(sum(rouge) / 3)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(generated, [references]).score / 100)
    assert got["tokens_per_second"] == 5.0 and got["n"] == 3


def test_cpu_decoding_copies_fold_the_adapter_in_or_leave_it_out(chat_dir, tmp_path):
    """On a CPU the model decodes through copies: the adapter folded into the weights (the
    tuned model's logits and text) or left out (the untuned model's), weights marked so that
    bf16 autocast casts each once per batch; the model itself is left as it was."""
    from finetune.generation import Decoder
    from finetune.modeling.generation import build_generator, decoding_model, generate

    cfg = recipe.config(chat_dir, tmp_path / "unused")
    model, tokenizer, _ = build_generator(cfg.model, 32, False, "cpu", 0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.05)  # a non-zero update, as after training
    model.eval()
    weights = {n: w.detach().clone() for n, w in model.named_parameters()}
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    prompts = [p for p, _ in recipe.PAIRS[:3]]
    tuned, untuned = decoding_model(model, False), decoding_model(model, True)
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.backbone.disable_adapter():
            base = model(input_ids=ids).logits
        assert torch.allclose(tuned(input_ids=ids).logits, adapted, atol=1e-5)
        assert torch.allclose(untuned(input_ids=ids).logits, base, atol=1e-6)
    assert not torch.allclose(adapted, base, atol=1e-3)  # the update is not negligible
    assert (
        generate(tuned, tokenizer, prompts, 8, 3).texts
        == generate(model, tokenizer, prompts, 8, 3).texts
    )
    assert all(w.requires_grad and w.dtype == torch.float32 for w in tuned.parameters())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.allclose(tuned(input_ids=ids).logits.float(), adapted, atol=0.1)
    decode = Decoder(model, tokenizer, 8, 3, False, None)
    with model.backbone.disable_adapter():
        assert (
            decode(prompts, untuned=True).texts == generate(model, tokenizer, prompts, 8, 3).texts
        )
    assert set(decode.copies) == {True}
    for name, weight in model.named_parameters():
        assert torch.equal(weight, weights[name]), name
    assert not any("lora" in n for n, _ in tuned.named_parameters())


def test_a_reply_ends_no_sooner_than_its_floor(chat_dir, tmp_path):
    """Per-prompt floors on the new tokens (options.min_reply_share: a share of each prompt's
    retrieved reply): with the end-of-reply token made the likeliest, every reply stops at
    exactly its own floor, whichever batch it decodes in."""
    from finetune.generation import Decoder
    from finetune.modeling.generation import build_generator, generate

    cfg = recipe.config(chat_dir, tmp_path / "unused")
    model, tokenizer, _ = build_generator(cfg.model, 32, False, "cpu", 0)
    eos = tokenizer.eos_token_id

    def likeliest_end(module, inputs, logits):
        logits[..., eos] += 1e4
        return logits

    model.backbone.get_base_model().lm_head.register_forward_hook(likeliest_end)
    model.eval()
    prompts = [p for p, _ in recipe.PAIRS[:5]]
    assert generate(model, tokenizer, prompts, 12, 2).new_tokens == 0
    floors = [0, 3, 7, 12, 20]  # the last is cut at max_new_tokens
    out = generate(model, tokenizer, prompts, 12, 2, min_new_tokens=floors)
    assert out.new_tokens == 0 + 3 + 7 + 12 + 12 and out.texts[0] == ""

    class Retrieved:  # what the decoder reads: each prompt's retrieved reply
        replies = ["one two three four five six seven eight", "yes", "", "a b c d", "ok then"]

        def with_replies(self, prompts, system):
            return list(prompts), self.replies

    decode = Decoder(model, tokenizer, 12, 2, False, None, Retrieved(), min_share=0.5)
    lengths = [len(tokenizer(r)["input_ids"]) for r in Retrieved.replies]
    expected = sum(min(-(-n // 2), 12) for n in lengths)
    assert decode(prompts).new_tokens == expected > 0
    decode.min_share = 0.0
    assert decode(prompts).new_tokens == 0


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_lora_on_the_top_layers_leaves_the_lower_ones_out_of_the_backward_pass(chat_dir, tmp_path):
    """With model.lora_layers the chat model adapts its top layers only, and the gradient
    never reaches the layers below (the speed the option is for)."""
    from finetune.modeling.generation import ChatInputs, GenerationTask, build_generator
    from finetune.modeling.models import load_tokenizer

    cfg = recipe.config(chat_dir, tmp_path / "unused")
    cfg.model.lora_layers = 1
    model, _, _ = build_generator(cfg.model, 32, False, "cpu", 0)
    adapted = {
        n.split(".layers.")[1].split(".")[0] for n, _ in model.named_parameters() if "lora_" in n
    }
    assert adapted == {"1"}
    reached = []
    layers = model.backbone.base_model.model.model.layers
    layers[0].register_full_backward_hook(lambda *_: reached.append(0))
    layers[1].register_full_backward_hook(lambda *_: reached.append(1))
    inputs = ChatInputs(load_tokenizer(str(chat_dir)), 32)
    items = inputs.encode_pairs(["refund me now"], ["money back please"])
    GenerationTask(inputs, 4, "cpu", False).loss(model, items, torch.zeros(1)).backward()
    assert reached == [1]


def test_batched_replies_come_back_in_the_prompts_order(trained):
    """Prompts decode in batches of similar length, each reply at its own prompt's place:
    the same replies as decoding each prompt alone."""
    from finetune.generation import load_generation_run
    from finetune.modeling.generation import generate

    loaded = load_generation_run(trained.folder)
    model, tokenizer = loaded.decode.model, loaded.decode.tokenizer
    prompts = [p for p, _ in recipe.PAIRS][::-1]
    assert len({len(p) for p in prompts}) > 3  # lengths differ: the batches reorder them
    together = generate(model, tokenizer, prompts, 8, 4).texts
    alone = [generate(model, tokenizer, [p], 8, 1).texts[0] for p in prompts]
    assert together == alone and len(set(alone)) > 1


def test_reply_takes_a_list_of_messages(trained):
    from finetune.errors import UserError
    from finetune.generation import load_generation_run

    loaded = load_generation_run(trained.folder)
    with pytest.raises(UserError, match=r"^Pass a list of messages; for one message"):
        loaded.reply("where is my parcel")  # not one reply per character
    with pytest.raises(UserError, match="^Message 1 is int: give a string, or a conversation"):
        loaded.reply(["where is my parcel", 3])
    assert len(loaded.reply(["where is my parcel"])) == 1


def test_4bit_generator_builds_and_takes_a_step(chat_dir, tmp_path):
    from finetune.generation import train_generation
    from finetune.modeling.models import check_quantization

    try:
        check_quantization("4bit", "cpu")
    except UserError as error:
        pytest.skip(str(error))
    data = recipe.pairs()
    run = train_generation(
        recipe.config(chat_dir, tmp_path / "q", quant="4bit", steps=1), data, data.head(2)
    )
    assert run.metrics["train"]["steps"] == 1 and run.metrics["generation"]["n"] == 2


def test_mismatched_pairs_and_missing_template_are_one_line(tiny_llama_dir):
    from finetune.modeling.generation import ChatInputs
    from finetune.modeling.models import load_tokenizer

    with pytest.raises(UserError, match="2 prompts but 1 responses"):
        Pairs(["a", "b"], ["c"])
    with pytest.raises(UserError, match="no chat template"):
        ChatInputs(load_tokenizer(str(tiny_llama_dir)), 32).encode_pairs(["a"], ["b"])


def test_a_killed_generation_run_resumes_where_it_stopped(chat_dir, tmp_path, monkeypatch):
    """A checkpoint written mid-run, placed beside a fresh output folder, continues to the same
    losses and replies as the run that was not interrupted; the checkpoint is then cleared."""
    import shutil
    from dataclasses import replace

    from finetune.generation import train_generation
    from finetune.training.checkpoint import Checkpoints
    from finetune.training.loop import TrainingLoop

    kept = []
    save = Checkpoints.save

    def save_and_keep(self, state):
        save(self, state)
        kept.append(tmp_path / f"state-{len(kept)}.pt")
        shutil.copy(self.path, kept[-1])

    data = recipe.pairs()

    def run(name, resume=False):
        config = recipe.config(chat_dir, tmp_path / name, steps=6)
        config.train.checkpoint_steps = 2
        return train_generation(replace(config, resume=resume), data, data, data, max_new_tokens=8)

    with monkeypatch.context() as patch:
        patch.setattr(Checkpoints, "save", save_and_keep)
        straight = run("straight")
    assert len(kept) >= 3 and not (tmp_path / "straight.checkpoint" / "state.pt").exists()
    placed = tmp_path / "resumed.checkpoint" / "state.pt"
    placed.parent.mkdir()
    shutil.copy(kept[1], placed)
    steps = []
    step = TrainingLoop.step
    with monkeypatch.context() as patch:
        patch.setattr(TrainingLoop, "step", lambda self, *a: steps.append(1) or step(self, *a))
        resumed = run("resumed", resume=True)
    done_before = torch.load(kept[1], weights_only=True)["step"]
    assert 0 < done_before and len(steps) == straight.metrics["train"]["steps"] - done_before
    assert resumed.metrics["train"]["history"] == straight.metrics["train"]["history"]
    assert resumed.generated == straight.generated
    assert not placed.exists()


def test_the_summary_report_reads_a_generation_run(chat_dir, tmp_path):
    """`finetune report` over a reply run: intent-consistency figures, the best baseline by
    its F1, the training time."""
    from finetune.generation import train_generation
    from finetune.markdown import figure
    from finetune.reporting.summary import SUMMARY_COLUMNS, write_summary

    data = recipe.pairs()
    data.labels = ["delivery", "account", "refund", "delivery", "account", "refund"]
    config = recipe.config(chat_dir, tmp_path / "run", steps=2)
    run = train_generation(config, data, data, max_new_tokens=4, baselines=("retrieval_tfidf",))
    folder, failures, rows = write_summary([run.folder], tmp_path / "report")
    row = dict(zip(SUMMARY_COLUMNS, rows[0], strict=True))
    reply = run.metrics["reply"]
    assert row["f1"] == figure(reply["model"]["intent_f1"]) != "n/a" and not failures
    assert (
        row["best baseline"]
        == f"retrieval_tfidf (F1 {figure(reply['retrieval_tfidf']['intent_f1'])})"
    )
    assert row["train time"].endswith(" s")
    assert (folder / "report.md").is_file()


def test_a_reply_run_with_progress_shows_each_decoding_pass(chat_dir, tmp_path, capsys):
    """Decoding the replies takes as long as training on a CPU: each pass gets a bar over its
    messages, the untuned model's too; without progress, none."""
    from finetune.generation import train_generation

    data = recipe.pairs()
    for show in (True, False):
        config = recipe.config(chat_dir, tmp_path / f"run-{show}", steps=1)
        train_generation(
            config,
            data,
            data,
            data,
            max_new_tokens=2,
            show_progress=show,
            baselines=("untuned", "retrieval_tfidf"),
        )
        err = capsys.readouterr().err
        n = len(data)
        for label in (
            "fine-tuned model's replies, evaluation messages",
            "untuned model's replies, evaluation messages",
            "fine-tuned model's replies, validation messages",
        ):
            shown = re.search(rf"{re.escape(label)}: 100%.*\b{n}/{n} ", err)
            assert bool(shown) == show, label


def test_the_growing_cache_decodes_exactly_as_transformers_own(chat_dir):
    """Replies decoded with the cache that grows in place equal those of transformers' own
    cache, token for token, greedy and sampled, over prompts of different lengths (left
    padding) and replies long enough to outgrow the cache's room twice when it is not sized
    for them."""
    from transformers import AutoModelForCausalLM

    from finetune.modeling.generation import encode_prompt, pad_batch
    from finetune.modeling.kvcache import GrowingLayer, growing_cache
    from finetune.modeling.models import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(chat_dir).eval()
    tokenizer = load_tokenizer(str(chat_dir))
    prompts = [p for p, _ in recipe.PAIRS[:4]]
    ids, mask = pad_batch([encode_prompt(tokenizer, p, None) for p in prompts], 2, left=True)
    assert len(set(mask.sum(1).tolist())) > 1  # the prompts differ in length
    steps = 3 * ids.shape[1]  # the room starts at twice the prompt: it grows twice
    outputs = {}
    for name, sample in (("greedy", False), ("sampled", True)):
        caches = {"growing": 0, "sized": ids.shape[1] + steps}  # first room: none, or all
        for kind in ("own", *caches):
            cache = growing_cache(model.config, caches[kind]) if kind in caches else None
            torch.manual_seed(0)
            with torch.no_grad():
                outputs[name, kind] = model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=steps,
                    min_new_tokens=steps, do_sample=sample, pad_token_id=2,
                    **({"cache": cache} if cache is not None else {}),
                )  # fmt: skip
        for kind in caches:
            assert torch.equal(outputs[name, "own"], outputs[name, kind]), (name, kind)
        assert outputs[name, "own"].shape[1] == ids.shape[1] + steps
    assert all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    for layer in cache.layers:  # the cached keys are a view of the room, never copied
        assert layer.keys.data_ptr() == layer.room[0].data_ptr()
        assert layer.room[0].shape[-2] == caches["sized"]
        assert layer.keys.shape[-2] == ids.shape[1] + steps - 1


def test_the_growing_cache_follows_selections_crops_and_other_layer_kinds():
    """A batch selection or a crop (as transformers' assisted decoding does) leaves the cache
    what transformers' own would hold; sliding-window layers keep their own kind."""
    from transformers import Gemma3TextConfig
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    from finetune.modeling.kvcache import GrowingLayer, growing_cache

    torch.manual_seed(0)
    steps = [torch.randn(3, 2, n, 4) for n in (5, 1, 1, 7, 1)]
    growing, own = GrowingLayer(), DynamicLayer()
    for i, step in enumerate(steps):
        if i == 2:
            for layer in (growing, own):
                layer.batch_select_indices(torch.tensor([2, 0]))
        if i == 4:
            for layer in (growing, own):
                layer.crop(-3)
        step = step[: own.keys.shape[0]] if own.is_initialized else step
        got, expected = growing.update(step, -step), own.update(step, -step)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1]), i
    config = Gemma3TextConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    kinds = [type(layer) for layer in growing_cache(config).layers]
    assert kinds == [DynamicSlidingWindowLayer, GrowingLayer]


def test_replies_that_end_leave_the_batch_and_the_rest_decode_as_before(chat_dir, monkeypatch):
    """Decoding in rounds: replies that end in a round leave the batch (the rounds after run
    on fewer rows), and every reply is the one decoding the whole batch at once gives."""
    from transformers import AutoModelForCausalLM

    from finetune.modeling import generation
    from finetune.modeling.models import load_tokenizer

    backbone = AutoModelForCausalLM.from_pretrained(chat_dir).eval()
    tokenizer = load_tokenizer(str(chat_dir))
    rows_seen = []

    def likelier_end(module, inputs, logits):  # replies of many lengths from a random model
        rows_seen.append(logits.shape[0])
        logits[..., tokenizer.eos_token_id] += 4.0
        return logits

    backbone.lm_head.register_forward_hook(likelier_end)
    prompts = [p for p, _ in recipe.PAIRS]
    encoded = [generation.encode_prompt(tokenizer, p, None) for p in prompts]
    ids, mask = generation.pad_batch(encoded, tokenizer.pad_token_id, left=True)
    with torch.no_grad():
        whole = backbone.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )[:, ids.shape[1] :].tolist()  # fmt: skip
    lengths = [row.index(2) if 2 in row else len(row) for row in whole]
    assert min(lengths) < 2 and any(2 < n < 24 for n in lengths) and max(lengths) == 24
    expected = [
        tokenizer.decode(row[:n], skip_special_tokens=True).strip()
        for row, n in zip(whole, lengths, strict=True)
    ]
    monkeypatch.setattr(generation, "DECODING_ROUND", 2)
    rows_seen.clear()
    out = generation.generate(generation.CausalLM(backbone), tokenizer, prompts, 24, len(prompts))
    assert out.texts == expected
    assert out.new_tokens == sum(lengths)
    still_going = sum(n == 24 for n in lengths)  # the last round runs on these rows only
    assert rows_seen[0] == len(prompts) > rows_seen[-1] == still_going


def test_the_decoding_step_benchmark_times_both_caches(tiny_llama_dir, capsys, monkeypatch):
    """benchmarks/decode_step.py runs on any causal LM folder and reports both caches."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "benchmarks" / "decode_step.py"
    argv = ["--model", str(tiny_llama_dir), "--widths", "1", "3", "--context", "6", "--steps", "2"]
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    runpy.run_path(str(script), run_name="__main__")
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["width"] for row in rows] == [1, 3]
    for row in rows:
        assert row["transformers_step_ms"] > 0 and row["growing_step_ms"] > 0
