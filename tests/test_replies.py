"""Customer-service replies: the bundled Bitext split, users' pair files and their errors,
the reply metrics on hand-built cases, and the CLI path (train --task reply, evaluate,
predict, chat, export) end to end on a tiny chat model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import generation_recipe
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from finetune.cli import app
from finetune.data.pairs import read_pairs, redact_pairs
from finetune.errors import UserError
from finetune.markdown import figure

ROOT = Path(__file__).parent.parent
BITEXT = ROOT / "recipes" / "data" / "bitext"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_bitext_split_is_fixed_stratified_and_matches_its_card():
    from finetune.data.cards import read_card
    from recipes.customer_service import recipe
    from recipes.customer_service_replies import split

    card, _ = read_card(ROOT / "finetune" / "cards" / "bitext.md")
    train, test = pd.read_csv(BITEXT / "train.csv"), pd.read_csv(BITEXT / "test.csv")
    assert (len(train), len(test)) == (card["size"]["train"], card["size"]["test"])
    assert not set(train["message"]) & set(test["message"])
    assert sorted(test["intent"].unique()) == sorted(card["classes"])
    counts, totals = Counter(test["intent"]), Counter(train["intent"]) + Counter(test["intent"])
    for intent, n in counts.items():  # each intent keeps its 10% (rounding: within one row)
        assert abs(n - 0.1 * totals[intent]) <= 1, intent
    assert (BITEXT / "LICENSE.txt").read_text().startswith("Community Data License Agreement")
    # The run's rows: evaluation and validation do not move with the training seed.
    config = recipe.config(quick=True, options={"task": "reply"})
    moved = recipe.config(quick=True, options={"task": "reply"}, train={"seed": 7})
    first, second = split(config), split(moved)
    for a, b in zip(first, second, strict=True):
        assert a.prompts == b.prompts
    train_pairs, validation, evaluation = first
    assert len(set(evaluation.labels)) == len(evaluation) == 8  # one per intent, 8 intents
    assert not set(validation.prompts) & set(train_pairs.prompts)
    assert set(evaluation.prompts) <= set(test["message"])


def test_spread_is_stratified_and_seeded():
    from recipes.customer_service_replies import spread

    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    rows = spread(labels, 30, 42, len(labels))
    assert Counter(labels[i] for i in rows) == {"a": 10, "b": 10, "c": 10}
    assert rows == spread(labels, 30, 42, len(labels)) != spread(labels, 30, 1, len(labels))
    assert spread(None, None, 0, 5) == [0, 1, 2, 3, 4]


def test_pair_tables_and_conversations_are_read(tmp_path):
    table = tmp_path / "pairs.jsonl"
    rows = [{"msg": "hi", "answer": "hello", "intent": "greet"}, {"msg": "x", "answer": "y"}]
    table.write_text("\n".join(json.dumps(r) for r in rows))
    pairs = read_pairs(table, "msg", "answer", "intent")
    assert pairs.prompts == ["hi", "x"] and pairs.responses == ["hello", "y"]
    pd.DataFrame({"m": ["a"], "r": ["b"]}).to_parquet(tmp_path / "p.parquet")
    assert read_pairs(tmp_path / "p.parquet", "m", "r").responses == ["b"]
    chats = tmp_path / "chats.jsonl"
    turns = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "where is my parcel"},
        {"role": "assistant", "content": "it ships today"},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "you are welcome"},
    ]
    chats.write_text(json.dumps({"messages": turns}) + "\n")
    pairs = read_pairs(chats)
    assert pairs.responses == ["it ships today", "you are welcome"]
    assert pairs.prompts[1] == turns[:4] and pairs.messages == ["where is my parcel", "thanks"]


def conversation(*turns: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (conversation(("user", "hi")), "line 1: the conversation ends"),
        (conversation(("bot", "hi")), "unknown role 'bot'"),
        (conversation(("user", ""), ("assistant", "a")), "message 1: empty user content"),
        (conversation(("user", "a"), ("assistant", "b")) + "\n{not json", "line 2: not valid"),
    ],
)
def test_bad_conversations_get_one_line(tmp_path, content, message):
    path = tmp_path / "chats.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as error:
        read_pairs(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_bad_tables_get_one_line(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"message": ["a", "b"], "reply": ["ok", " "]}).to_csv(path, index=False)
    with pytest.raises(UserError, match=r"pairs.csv, line 3: column 'reply' is empty"):
        read_pairs(path, "message", "reply")
    with pytest.raises(UserError, match="no column 'answer'.*--response-column"):
        read_pairs(path, "message", "answer")


def test_pairs_are_redacted_in_prompts_and_replies():
    from finetune.data.pairs import Pairs

    pairs = Pairs(
        ["mail me at ann@example.com", [{"role": "user", "content": "call +44 20 7946 0958"}]],
        ["write to help@shop.com", "ok"],
    )
    redacted, counts = redact_pairs(pairs)
    assert redacted.prompts[0] == "mail me at [EMAIL]"
    assert redacted.prompts[1][0]["content"] == "call [PHONE]"
    assert redacted.responses[0] == "write to [EMAIL]" and counts.total == 3


def test_reply_metrics_on_hand_built_cases():
    from finetune.evaluation.reply_metrics import (
        foreign_numbers,
        intent_consistency,
        pii_leaks,
        placeholder_fidelity,
        retrieve_tfidf,
    )

    references = ["call {{Phone}} or visit {{Website}}", "see {{Website}}", "thanks"]
    generated = ["visit {{Website}} or call {{Phone}}", "see {{Website}} and {{Menu}}", "thanks"]
    assert placeholder_fidelity(generated, references) == pytest.approx(2 / 3)
    assert pii_leaks(["mail ann@example.com", "card 4111 1111 1111 1111", "no"]) == 2
    replies = ["order 558812 is cancelled", "order 558812 and 77120 ships"]
    assert foreign_numbers(replies, ["cancel my order", "where is order 558812"]) == 2

    class Fixed:  # a "classifier" labelling each reply by its first word
        def predict(self, texts):
            return [t.split()[0] for t in texts]

    figures = intent_consistency(Fixed(), ["refund x", "refund y", "track z"], ["refund"] * 3)
    assert figures["intent_accuracy"] == pytest.approx(2 / 3)
    assert figures["intent_recall"] == pytest.approx(2 / 3)  # one true class: its recall
    assert figures["intent_f1"] == pytest.approx(0.8)  # precision 1, recall 2/3
    replies = retrieve_tfidf(
        ["where is my parcel", "refund me"], ["tracking", "refund"], ["my parcel?"]
    )
    assert replies == ["tracking"]


def test_the_consensus_of_retrieved_replies_passes_over_the_one_that_stands_apart(monkeypatch):
    from finetune.modeling.generation import RetrievedReplies
    from finetune.modeling.retrieval import consensus

    nearest_first = [
        "please track your parcel on our website",  # the nearest, unlike the others
        "the refund is on its way to your bank card",
        "your refund is on its way to your card",
        "your refund is on its way to your card",  # two similar messages got this reply
    ]
    assert consensus([nearest_first]) == ["your refund is on its way to your card"]
    assert consensus([["same reply", "same reply"], ["only one"]]) == ["same reply", "only one"]
    index = RetrievedReplies(np.eye(3), ["a", "b", "c"])
    monkeypatch.setattr(index, "unit_vectors", lambda texts: np.array([[0.5, 0.9, 0.1]]))
    assert index.candidates(["message"], 2) == [["b", "a"]]
    assert index.candidates(["message"], 5) == [["b", "a", "c"]]  # no more than it has
    assert index.nearest(["message"]) == ["b"]


def test_the_run_serves_the_servable_retrieval_that_beats_its_model_by_the_most():
    from finetune.generation import delivered
    from finetune.reporting.generation import serving_note, verdict_lines

    def scored(rouge: float, chrf: float) -> dict[str, float]:
        return {"rougeL": rouge, "chrf": chrf}

    figures = {
        "model": scored(0.37, 0.46),
        "retrieval_embedding": scored(0.36, 0.48),  # higher chrF only: not enough
        "retrieval_consensus": scored(0.39, 0.53),
    }
    assert delivered(figures) == "retrieval_consensus"
    figures["retrieval_embedding"] = scored(0.40, 0.50)  # both beat it: the higher sum serves
    assert delivered(figures) == "retrieval_consensus"
    figures["retrieval_embedding"] = scored(0.40, 0.53)
    assert delivered(figures) == "retrieval_embedding"
    losses = ["retrieval_consensus rougeL", "retrieval_consensus chrf"]
    metrics = {
        "validation": {"n": 27, "figures": figures, "model_loses_to": losses},
        "delivered": {"name": "retrieval_consensus", "best": "retrieval_consensus"},
    }
    line = verdict_lines(metrics)[0]
    assert "The run serves retrieval (consensus of minilm's nearest) instead" in line
    assert (
        "answer with the reply, among those to the 5 most similar training messages, most" in line
    )
    note = serving_note(metrics, "retrieval_consensus")
    assert note.endswith("'s: the reply, among those to the 5 most similar training messages, "
                         "most like the others (report.md).")  # fmt: skip


def test_a_baseline_the_run_cannot_serve_is_named_when_it_beats_the_model():
    from finetune.reporting.generation import verdict_lines

    def scored(rouge: float, chrf: float) -> dict[str, float]:
        return {"rougeL": rouge, "chrf": chrf}

    figures = {
        "model": scored(0.37, 0.46),
        "retrieval_embedding": scored(0.36, 0.48),
        "retrieval_consensus": scored(0.39, 0.45),  # higher ROUGE-L only
    }
    losses = ["retrieval_embedding chrf", "retrieval_consensus rougeL"]
    metrics = {
        "validation": {"n": 27, "figures": figures, "model_loses_to": losses},
        "delivered": {"name": "model", "best": "model"},
    }
    line = verdict_lines(metrics)[0]
    assert (
        "no retrieval it can serve (`retrieval (frozen minilm)`, `retrieval (consensus of "
        "minilm's nearest)`) beats it on both ROUGE-L and chrF there by more than 0.005." in line
    )
    assert line.endswith("by more than 0.005.")
    figures["retrieval_tfidf"] = scored(0.40, 0.50)
    assert verdict_lines(metrics)[0].endswith(
        "`retrieval (TF-IDF)` beats it on both there, but runs do not serve it."
    )


# Refund and tracking replies; the last is a refund reply in tracking words.
JUDGED_REPLIES = [
    "your refund is on its way",
    "we sent the refund to your card",
    "the refund reaches your card soon",
    "follow your parcel on the tracking page",
    "your parcel tracking number is below",
    "the tracking page shows your parcel",
    "the parcel tracking page shows it",
]
JUDGED_INTENTS = ["refund"] * 3 + ["track"] * 3 + ["refund"]


def test_the_judge_labels_a_training_reply_as_if_it_had_never_seen_it():
    from finetune.evaluation.reply_metrics import fit_reply_judge

    replies, intents = JUDGED_REPLIES, JUDGED_INTENTS
    judge = fit_reply_judge(replies, intents, seed=0, folds=3)
    # Fitted on it, the classifier recalls the odd reply's intent; out of fold it cannot,
    # and that is how a reply it has never seen (a generated one) is judged.
    assert list(judge.classifier.predict([replies[-1]])) == ["refund"]
    served = replies[-1].replace(" tracking ", "  tracking\r\n")  # as a CSV gives it back
    assert list(judge.predict([served, "the refund to your card"])) == ["track", "refund"]
    # A reply that is not word for word a training reply goes to the full classifier.
    assert list(judge.predict(["the parcel tracking page shows it now"])) == ["refund"]


def test_an_intent_with_a_single_reply_is_named_and_the_others_stay_out_of_fold():
    from finetune.evaluation.reply_metrics import fit_reply_judge
    from finetune.generation import Judge
    from finetune.reporting.generation import judge_note

    replies = [*JUDGED_REPLIES, "your invoice is attached to this mail"]  # the only invoice one
    intents = [*JUDGED_INTENTS, "invoice"]
    judge = fit_reply_judge(replies, intents, seed=0, folds=3)
    assert judge.in_sample == ("invoice",)
    # The single invoice reply does not take the out-of-fold labels of the others with it.
    assert list(judge.predict([replies[-2], replies[-1]])) == ["track", "invoice"]
    seen = Judge(judge).in_sample()
    assert seen == {"intents": ["invoice"], "of": 3}
    assert "favoured on 1 of 3 intents (invoice)" in judge_note({"judge_in_sample": seen})
    # A judge saved before out-of-fold labels (the plain classifier) labels every intent so.
    assert Judge(judge.classifier).in_sample() == {
        "intents": ["invoice", "refund", "track"],
        "of": 3,
    }
    assert judge_note({"judge_in_sample": {"intents": [], "of": 3}}) == ""
    # No fold split leaves two intents to fit on: every intent is then labelled in sample.
    tiny = fit_reply_judge(["apple banana", "apple cherry", "xylophone yak"], ["a", "a", "b"], 0)
    assert (tiny.in_sample, tiny.held_out) == (("a", "b"), {})


@pytest.fixture(scope="module")
def chat_dir(tiny_llama_dir, tmp_path_factory):
    return generation_recipe.chat_model(tiny_llama_dir, tmp_path_factory.mktemp("chat") / "model")


@pytest.fixture(scope="module")
def reply_run(chat_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reply")
    rows = [
        {"message": p, "reply": r, "intent": "delivery" if i % 2 == 0 else "account"}
        for i, (p, r) in enumerate(generation_recipe.PAIRS)
    ]
    data = folder / "pairs.csv"
    pd.DataFrame(rows * 2).to_csv(data, index=False)
    pd.DataFrame(rows).to_csv(folder / "eval.csv", index=False)
    result = invoke(
        "customer-service", "train", "--task", "reply", "--quick",
        "--data", str(data), "--eval-data", str(folder / "eval.csv"),
        "--prompt-column", "message", "--response-column", "reply",
        "--model", str(chat_dir), "--output", str(folder / "run"), "--max-steps", "40",
        "--set", "train.learning_rate=1e-2", "--set", "train.batch_size=6",
        "--set", "data.max_length=32", "--set", "model.lora_dropout=0",
        "--set", "train.precision=fp32", "--set", "options.system=",
        "--set", "options.val_rows=2", "--set", "options.eval_rows=null",
        "--set", "options.max_new_tokens=8", "--set", "options.retrieved_reply=false",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return folder, result.output


def test_reply_train_writes_a_self_describing_run(reply_run):
    from finetune.generation import delivered
    from finetune.modeling.generation import RetrievedReplies

    folder, output = reply_run
    run = folder / "run"
    for name in ("config.yaml", "metrics.json", "predictions.csv", "report.md", "environment.json"):
        assert (run / name).is_file(), name
    assert (run / "adapter" / "generator.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    methods = {"model", "untuned", "retrieval_tfidf", "retrieval_embedding", "retrieval_consensus"}
    assert set(metrics["reply"]) == methods
    for figures in metrics["reply"].values():
        assert set(figures) == {
            "rougeL", "chrf", "intent_accuracy", "intent_recall", "intent_f1",
            "placeholder_fidelity", "pii_leaks", "foreign_numbers",
        }  # fmt: skip
    model = metrics["reply"]["model"]
    assert (metrics["accuracy"], metrics["f1"]) == (model["intent_accuracy"], model["intent_f1"])
    # The training pairs are the evaluation pairs here: retrieval copies the reference, so
    # its intent figures are the classifier's on the references, the ceiling the run reports.
    assert metrics["reply"]["retrieval_tfidf"]["rougeL"] == pytest.approx(1.0)
    ceiling = metrics["reference_intents"]
    assert ceiling == {k: metrics["reply"]["retrieval_tfidf"][k] for k in ceiling}
    assert set(ceiling) == {"intent_accuracy", "intent_recall", "intent_f1"}
    assert metrics["judge_in_sample"] == {"intents": [], "of": 2}
    assert metrics["reply"]["model"]["rougeL"] > metrics["reply"]["untuned"]["rougeL"]
    assert metrics["validation"]["n"] == 2
    assert metrics["delivered"]["name"] == delivered(metrics["validation"]["figures"])
    assert RetrievedReplies.load(run, 8, "cpu").in_prompts is False  # kept to serve it
    report = (run / "report.md").read_text()
    assert "retrieval (TF-IDF)" in report and "fine-tuned model" in report
    assert (
        f"reference replies themselves it scores accuracy {figure(ceiling['intent_accuracy'])}"
        in report
    )
    assert "fine-tuned model" in output and "Run folder" in output
    table = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    assert list(table.columns[:4]) == ["prompt", "reference", "label", "generated"]


def test_reply_predict_evaluate_and_chat(reply_run):
    folder, _ = reply_run
    run = folder / "run"
    table = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    result = invoke("customer-service", "predict", "--run", str(run), "--text", table.prompt[0])
    assert result.exit_code == 0 and result.stdout.strip() == table.generated[0]
    out = folder / "replies.csv"
    result = invoke(
        "customer-service", "predict", "--run", str(run), "--data", str(folder / "eval.csv"),
        "--output", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out, keep_default_na=False)["reply"].tolist() == table.generated.tolist()
    result = invoke(
        "customer-service", "evaluate", "--run", str(run), "--data", str(folder / "eval.csv")
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "evaluations" / "eval.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert saved["reply"]["model"]["rougeL"] == pytest.approx(metrics["reply"]["model"]["rougeL"])
    assert saved["reference_intents"] == metrics["reference_intents"]  # the same pairs
    # Every method the run scored, as a user's new pairs get them (here the run's own).
    assert set(saved["reply"]) == set(metrics["reply"])
    for method in ("untuned", "retrieval_tfidf", "retrieval_embedding", "retrieval_consensus"):
        assert saved["reply"][method] == pytest.approx(metrics["reply"][method])
    result = runner.invoke(
        app, ["customer-service", "chat", "--run", str(run)], input=f"{table.prompt[0]}\nthanks\n\n"
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("assistant> ") == 2
    assert f"assistant> {table.generated[0]}" in result.output


def test_the_run_serves_retrieval_only_when_it_beats_the_model_on_both_figures():
    from finetune.generation import delivered

    def figures(model, tfidf, embedding):
        rows = {"model": model, "retrieval_tfidf": tfidf, "retrieval_embedding": embedding}
        return {k: dict(zip(("rougeL", "chrf"), v, strict=True)) for k, v in rows.items()}

    assert delivered(figures((0.3, 0.4), (0.2, 0.3), (0.31, 0.41))) == "retrieval_embedding"
    assert delivered(figures((0.3, 0.4), (0.2, 0.3), (0.31, 0.39))) == "model"  # mixed
    assert delivered(figures((0.3, 0.4), (0.2, 0.3), (0.3, 0.41))) == "model"  # a tie is no win
    assert delivered(figures((0.3, 0.4), (0.2, 0.3), (0.304, 0.41))) == "model"  # within margin
    assert delivered(figures((0.3, 0.4), (0.5, 0.5), (0.2, 0.3))) == "model"  # TF-IDF: never served
    assert delivered({"model": {"rougeL": 0.1, "chrf": 0.1}}) == "model"


def test_deliver_finetuned_serves_the_model_and_names_the_better_retrieval(
    chat_dir, tmp_path, monkeypatch
):
    """`eval.deliver finetuned` keeps the model served even when the frozen-encoder retrieval
    beat it on both figures; the report and the served note say so."""
    from finetune import generation
    from finetune.data.pairs import Pairs

    monkeypatch.setattr(generation, "delivered", lambda figures: "retrieval_embedding")
    recipe = generation_recipe  # the tiny chat model's short settings
    data = recipe.pairs()
    data = Pairs(data.prompts, data.responses, labels=["delivery", "account"] * 3)
    config = recipe.config(chat_dir, tmp_path / "run", steps=2)
    config.eval.deliver = "finetuned"
    baselines = ("retrieval_tfidf", "retrieval_embedding")
    run = generation.train_generation(config, data, data, data, 4, baselines=baselines)
    assert run.metrics["delivered"] == {"name": "model", "best": "retrieval_embedding"}
    assert "serves the fine-tuned model as asked" in (run.folder / "report.md").read_text()
    loaded = generation.load_generation_run(run.folder)
    assert loaded.serve == "model" and "its replies are served as asked" in loaded.note


@pytest.mark.parametrize("case", ["beats", "mixed", "retrieval", "consensus"])
def test_what_a_reply_run_serves_follows_its_validation_rows(
    reply_run, tmp_path, case, monkeypatch
):
    """The model is served when it beats retrieval on validation; when it loses on one figure
    it is still served and predict, chat and the export say so first; when a kept retrieval
    (the nearest reply, or the consensus of the nearest) beats it on both, predict, chat and
    the export's reply.py serve that retrieved reply and say so (never silently), without
    loading the chat model."""
    import shutil

    from finetune.modeling import generation
    from finetune.modeling.generation import RetrievedReplies

    loads = []  # chat models loaded by predict and chat
    load_generator = generation.load_generator
    monkeypatch.setattr(
        generation, "load_generator", lambda *a, **k: loads.append(a) or load_generator(*a, **k)
    )

    run = tmp_path / "run"
    shutil.copytree(reply_run[0] / "run", run)
    metrics = json.loads((run / "metrics.json").read_text())
    loses = {"beats": [], "mixed": ["retrieval_embedding chrf"]}
    loses["retrieval"] = ["retrieval_embedding rougeL", "retrieval_embedding chrf"]
    loses["consensus"] = ["retrieval_consensus rougeL", "retrieval_consensus chrf"]
    metrics["validation"]["model_loses_to"] = loses[case]
    serves = {"retrieval": "retrieval_embedding", "consensus": "retrieval_consensus"}
    serves = serves.get(case, "model")
    metrics["delivered"] = {"name": serves}
    (run / "metrics.json").write_text(json.dumps(metrics))
    # The tiny model has learnt the training replies by heart: mark the retrieved ones so
    # that serving them is told apart from the model's (and each copy of a reply apart).
    index = json.loads((run / "retrieval.json").read_text())
    index["replies"] = [f"(retrieved {i % 3}) {r}" for i, r in enumerate(index["replies"])]
    (run / "retrieval.json").write_text(json.dumps(index))
    table = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    table.update(pd.DataFrame(RetrievedReplies.load(run, 8, "cpu").served(list(table.prompt))))
    table.to_csv(run / "predictions.csv", index=False)
    column = {"retrieval": "retrieval_embedding", "consensus": "retrieval_consensus"}
    expected = table[column.get(case, "generated")].tolist()
    # The consensus is not simply the nearest reply here: serving it is told apart too.
    assert table.retrieval_consensus.tolist()[:3] != table.retrieval_embedding.tolist()[:3]
    result = invoke("customer-service", "predict", "--run", str(run), "--text", table.prompt[0])
    assert result.exit_code == 0 and result.stdout.strip() == expected[0]
    said = f"loses to retrieval on its 2 validation messages (lower {', '.join(loses[case])})"
    assert (said in result.stderr) is (case != "beats")
    assert ("the replies served are retrieval (frozen" in result.stderr) is (case == "retrieval")
    assert ("served are retrieval (consensus" in result.stderr) is (case == "consensus")
    result = runner.invoke(
        app, ["customer-service", "chat", "--run", str(run)], input=f"{table.prompt[1]}\n\n"
    )
    assert result.exit_code == 0 and (said in result.output) is (case != "beats")
    assert f"assistant> {expected[1]}" in result.output
    assert len(loads) == (0 if serves != "model" else 2)
    exported = tmp_path / "exported"
    result = invoke("export", "--run", str(run), "--output", str(exported))
    assert result.exit_code == 0, result.output
    assert (said in (exported / "README.md").read_text()) is (case != "beats")
    reply = json.loads((exported / "reply.json").read_text())
    assert (reply["note"] is not None and said in reply["note"]) is (case != "beats")
    assert reply["serve"] == serves
    checks = json.loads((exported / "export.json").read_text())
    assert checks["same_text"] == checks["prompts"] > 0  # the merged model, whatever is served
    assert checks.get("same_served", checks["prompts"]) == checks["prompts"]
    command = [sys.executable, "reply.py", *table.prompt[:3]]
    served = subprocess.run(command, cwd=exported, capture_output=True, text=True, check=True)
    assert served.stdout.splitlines() == expected[:3]


def test_reply_export_loads_in_plain_transformers(reply_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _ = reply_run
    run, exported = folder / "run", folder / "exported"
    result = invoke("export", "--run", str(run), "--output", str(exported))
    assert result.exit_code == 0, result.output
    checks = json.loads((exported / "export.json").read_text())
    assert checks["same_text"] == checks["prompts"] > 0
    tokenizer = AutoTokenizer.from_pretrained(str(exported))
    model = AutoModelForCausalLM.from_pretrained(str(exported))
    table = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    for prompt, expected in zip(table.prompt[:3], table.generated[:3], strict=True):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt",
            return_dict=True,
        )  # fmt: skip
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert text.strip() == expected


def test_the_export_benchmark_compares_reply_py_with_the_run(reply_run, capsys, monkeypatch):
    """benchmarks/exported_replies.py: the exported reply.py gives the run's full replies."""
    import runpy

    folder, _ = reply_run
    exported = folder / "exported-bench"
    assert invoke("export", "--run", str(folder / "run"), "--output", str(exported)).exit_code == 0
    script = ROOT / "benchmarks" / "exported_replies.py"
    argv = [str(script), str(folder / "run"), str(exported), "--prompts", "4"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    figures = json.loads(capsys.readouterr().out)
    assert figures["prompts"] == figures["same_as_run"] == 4


def test_the_exported_reply_script_redacts_what_comes_in_and_what_goes_out(reply_run, monkeypatch):
    """reply.py, like predict and chat, redacts PII in the message before the model sees it
    and replaces a phone number or e-mail address the model makes up."""
    from finetune.modeling.reply_export import exported_replies

    folder, _ = reply_run
    exported = folder / "exported-pii"
    result = invoke("export", "--run", str(folder / "run"), "--output", str(exported))
    assert result.exit_code == 0, result.output
    assert json.loads((exported / "export.json").read_text())["redact_pii"] is True
    import transformers

    seen, real = [], transformers.AutoTokenizer.from_pretrained

    class Talky:  # the real tokenizer, which records what it encodes and makes a reply up
        def __init__(self, tokenizer):
            self.tokenizer = tokenizer

        def __getattr__(self, name):
            return getattr(self.tokenizer, name)

        def __call__(self, text, **kwargs):
            seen.append(text)
            return self.tokenizer(text, **kwargs)

        def decode(self, *args, **kwargs):
            return "call us at 1-800-338-8383 or help@shop.example"

    def talky(*args, **kwargs):
        return Talky(real(*args, **kwargs))

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", talky)
    replies = exported_replies(exported, ["my card 4111 1111 1111 1111 was charged twice"], 4)
    assert replies == ["call us at [PHONE] or [EMAIL]"]
    assert "[CARD]" in seen[0] and "4111" not in seen[0]


def test_reply_task_errors_are_one_line(tmp_path, chat_dir):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"message": ["a", "b", "c"], "reply": ["x", "y", "z"]}).to_csv(path, index=False)
    result = runner.invoke(
        app, ["customer-service", "train", "--task", "reply", "--data", str(path),
              "--response-column", "answer", "--model", str(chat_dir)],
    )  # fmt: skip
    assert result.exit_code == 2 and "no column 'answer'" in result.output
    result = runner.invoke(app, ["customer-service", "train", "--task", "summarise"])
    assert result.exit_code == 2 and "--task must be intent or reply" in result.output


def test_system_turn_and_conversations_carry_no_loss(chat_dir):
    """With the recipe's system turn, or a whole conversation as the prompt, the labels still
    cover the final reply's tokens only."""
    from finetune.modeling.generation import IGNORE, ChatInputs
    from finetune.modeling.models import load_tokenizer

    tokenizer = load_tokenizer(str(chat_dir))
    inputs = ChatInputs(tokenizer, 32, system="thanks")
    history = [
        {"role": "user", "content": "where is my parcel"},
        {"role": "assistant", "content": "tracking has not moved"},
        {"role": "user", "content": "refund me now"},
    ]
    items = inputs.encode_pairs(["refund me now", history], ["money back please"] * 2)
    batch = inputs.collate(items)
    for row, (ids, n_prompt) in enumerate(items):
        words = tokenizer.convert_ids_to_tokens(ids[:n_prompt])
        assert "thanks" in words  # the system turn is in the prompt
        labels = batch["labels"][row]
        answer = tokenizer.convert_ids_to_tokens(labels[labels != IGNORE].tolist())
        assert answer == ["money", "back", "please", tokenizer.eos_token]
    assert "tracking" in tokenizer.convert_ids_to_tokens(items[1][0][: items[1][1]])


def test_retrieved_replies_leave_each_training_pair_out():
    """With `options.retrieved_reply`, a training prompt carries the reply of its nearest
    *other* training message (never its own), in the system turn."""
    import numpy as np

    from finetune.data.pairs import Pairs
    from finetune.modeling.generation import (
        RETRIEVED_LEAD,
        RetrievedReplies,
        with_retrieved_reply,
    )

    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.9]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    retrieved = RetrievedReplies(vectors, ["a", "b", "c", "d"])
    train = Pairs(["m1", "m2", "m3", "m4"], ["a", "b", "c", "d"], labels=list("xxyy"))
    fitted = retrieved.training_pairs(train, "sys")
    assert [turns[0]["content"].rsplit("\n", 1)[1] for turns in fitted.prompts] == list("badc")
    assert fitted.prompts[0] == [
        {"role": "system", "content": f"sys\n\n{RETRIEVED_LEAD}\nb"},
        {"role": "user", "content": "m1"},
    ]
    assert (fitted.responses, fitted.labels) == (train.responses, train.labels)
    own = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert with_retrieved_reply(own, "r", "sys")[0]["content"] == f"be brief\n\n{RETRIEVED_LEAD}\nr"
    assert with_retrieved_reply("hi", "r")[0] == {
        "role": "system",
        "content": f"{RETRIEVED_LEAD}\nr",
    }


def test_a_retrieved_reply_run_reloads_predicts_and_exports_alike(chat_dir, tmp_path):
    """A run trained with retrieved replies saves its retrieval; predict, chat and export
    put the same reply in the prompt as the run did (the baseline `retrieval_embedding`'s)."""
    from finetune.generation import load_generation_run
    from finetune.modeling.generation import RETRIEVED_LEAD, Generated, RetrievedReplies

    rows = [
        {"message": p, "reply": r, "intent": "delivery" if i % 2 == 0 else "account"}
        for i, (p, r) in enumerate(generation_recipe.PAIRS)
    ]
    data, run = tmp_path / "pairs.csv", tmp_path / "run"
    pd.DataFrame(rows * 2).to_csv(data, index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "eval.csv", index=False)
    result = invoke(
        "customer-service", "train", "--task", "reply", "--quick",
        "--data", str(data), "--eval-data", str(tmp_path / "eval.csv"),
        "--model", str(chat_dir), "--output", str(run), "--max-steps", "4",
        "--set", "options.retrieved_reply=true", "--set", "data.max_length=96",
        "--set", "train.precision=fp32", "--set", "options.val_rows=2",
        "--set", "options.eval_rows=null", "--set", "options.max_new_tokens=6",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["retrieved_reply"] is True
    assert "Retrieval-augmented prompts" in (run / "report.md").read_text()
    retrieved = RetrievedReplies.load(run, 8, "cpu")
    assert retrieved is not None and len(retrieved.replies) == 10  # 12 pairs, 2 validation
    table = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    assert retrieved.nearest(table.prompt.tolist()) == table.retrieval_embedding.tolist()
    # Four steps of training: what the run serves is whichever its validation rows chose.
    serves = json.loads((run / "metrics.json").read_text())["delivered"]["name"]
    served = table.retrieval_embedding if serves == "retrieval_embedding" else table.generated
    result = invoke("customer-service", "predict", "--run", str(run), "--text", table.prompt[2])
    assert result.exit_code == 0 and result.stdout.strip() == served[2]
    seen = []  # what a reload hands the model: the retrieved reply in the system turn
    loaded = load_generation_run(run, serve="model")
    loaded.decode._generate = lambda _, prompts, floors, label: (
        seen.extend(prompts) or Generated(["x"], 0, 0.0)
    )
    loaded.reply([table.prompt[2]])
    assert seen[0][0]["content"].endswith(f"{RETRIEVED_LEAD}\n{table.retrieval_embedding[2]}")
    result = invoke(
        "customer-service", "evaluate", "--run", str(run), "--data", str(tmp_path / "eval.csv")
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "evaluations" / "eval.json").read_text())["reply"]
    metrics = json.loads((run / "metrics.json").read_text())["reply"]
    for method in ("model", "retrieval_embedding"):  # the same messages as the run's own
        assert saved[method]["rougeL"] == pytest.approx(metrics[method]["rougeL"])
    exported = tmp_path / "exported"
    result = invoke("export", "--run", str(run), "--output", str(exported))
    assert result.exit_code == 0, result.output
    checks = json.loads((exported / "export.json").read_text())
    assert checks["same_text"] == checks["prompts"] > 0 and checks["retrieved_reply"]
    # reply.py serves the run's replies on its own: the retrieved reply, the template, greedy.
    source = (exported / "reply.py").read_text()
    assert "finetune" not in re.sub(r'""".*?"""', "", source, flags=re.S)
    command = [sys.executable, "reply.py", *table.prompt[:3]]
    printed = subprocess.run(command, cwd=exported, capture_output=True, text=True, check=True)
    assert printed.stdout.splitlines() == served[:3].tolist()


def test_served_replies_never_carry_a_made_up_phone_number(reply_run):
    """predict and chat serve replies through the redactor when the run redacts PII, and
    without a number the conversation did not give; the run's own `pii_leaks` and
    `foreign_numbers` count what the model wrote before that."""
    from finetune.generation import load_generation_run
    from finetune.modeling.generation import Generated

    loaded = load_generation_run(reply_run[0] / "run")
    made_up = "call us at 1-800-338-8383 or write to help@shop.example about order 732201349959"
    loaded.decode = lambda prompts: Generated([made_up] * len(prompts), 0, 0.0)
    served = "call us at [PHONE] or write to [EMAIL] about order "
    assert loaded.reply(["where is my parcel"]) == [served + "[NUMBER]"]
    # The customer's own order number is theirs to read back, in any turn of the conversation.
    conversation = [
        {"role": "user", "content": "my order is 7322 0134 9959"},
        {"role": "assistant", "content": "thanks, looking"},
        {"role": "user", "content": "where is my parcel"},
    ]
    assert loaded.reply([conversation]) == [served + "732201349959"]
    loaded.redact = False
    assert loaded.reply(["where is my parcel"]) == [made_up]


@pytest.mark.parametrize(
    ("option", "value", "wanted"),
    [
        ("max_new_tokens", -3, "must be positive"),
        ("decode_batch", 0, "must be positive"),
        ("train_rows", 0, "must be positive"),
        ("eval_rows", -1, "must be positive"),
        ("val_rows", -1, "must be 0 or more"),
        ("min_reply_share", 2, "must be at most 1.0"),
    ],
)
def test_reply_options_out_of_range_are_one_line(option, value, wanted):
    from recipes.customer_service import recipe

    with pytest.raises(UserError, match=rf"options\.{option} {wanted}; got {value}\.$"):
        recipe.config(options={"task": "reply", option: value})
    recipe.config(options={"task": "reply", "val_rows": 0, "train_rows": None})  # allowed


def test_a_dataset_of_the_other_task_is_named_as_such():
    from recipes.customer_service import recipe

    with pytest.raises(UserError, match="'chinese_reviews' is not bundled for the reply task"):
        recipe.config(options={"task": "reply", "dataset": "chinese_reviews"})
    with pytest.raises(UserError, match="'bitext' is not bundled for the intent task"):
        recipe.train(recipe.config(options={"dataset": "bitext"}), show_progress=False)
