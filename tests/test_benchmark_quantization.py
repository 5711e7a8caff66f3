"""The quantization benchmark keeps working (tiny random BERT, a few rows, one step each)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "quantization.py"


def test_quantization_benchmark_runs_on_a_tiny_slice(tiny_model_dir, tmp_path):
    output, table = tmp_path / "result.json", tmp_path / "table.md"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--models", str(tiny_model_dir), "--quants", "none", "4bit"]
        + ["--limit", "42", "--eval-limit", "14", "--max-steps", "1", "--batch-size", "8"]
        + ["--output", str(output), "--table", str(table)],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = json.loads(output.read_text())["rows"]
    assert [row["quant"] for row in rows] == ["none", "4bit"]
    assert all(row["device"] == "cpu" and row["memory_kind"] == "peak RSS" for row in rows)
    assert rows[1]["weights_mb"] < rows[0]["weights_mb"]  # packed 4-bit weights are smaller
    assert rows[1]["weights_ratio"] == pytest.approx(rows[1]["weights_mb"] / rows[0]["weights_mb"])
    assert rows[1]["speed_ratio"] == pytest.approx(
        rows[1]["samples_per_second"] / rows[0]["samples_per_second"]
    )
    # --max-steps 1 and --eval-limit 14 are honoured: one step, accuracy over exactly 14 rows.
    assert all(row["steps"] == 1 for row in rows)
    assert all(round(row["accuracy"] * 14, 6).is_integer() for row in rows)
    assert table.read_text().startswith("| model | quant | device | peak_memory_mb")


def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU machine: run benchmarks/gpu_check.sh itself")
    script = SCRIPT.parent / "gpu_check.sh"
    done = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode != 0 and "no NVIDIA GPU" in done.stderr


def _benchmark(name: str) -> dict:
    """A benchmark script's functions (benchmarks/ is scripts, not a package)."""
    import runpy

    return runpy.run_path(str(SCRIPT.parent / f"{name}.py"))


@pytest.fixture(scope="module")
def chat_dir(tiny_llama_dir, tmp_path_factory):
    import generation_recipe

    return generation_recipe.chat_model(tiny_llama_dir, tmp_path_factory.mktemp("chat") / "m")


def test_the_reply_comparison_reports_tokens_per_second_and_survives_a_failed_model(
    chat_dir, tmp_path
):
    output, table = tmp_path / "result.json", tmp_path / "table.md"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--task", "reply", "--quants", "none"]
        + ["--models", str(tmp_path / "no-such-model"), str(chat_dir)]
        + ["--limit", "32", "--eval-limit", "8", "--max-steps", "1", "--batch-size", "4"]
        + ["--max-new-tokens", "4", "--output", str(output), "--table", str(table)],
        check=True,
        capture_output=True,
        text=True,
    )
    failed, row = json.loads(output.read_text())["rows"]
    assert failed["model"].endswith("no-such-model") and failed["error"]
    assert row["steps"] == 1 and row["n_eval"] == 8
    # One step of 4 pairs: its prompt and reply tokens, at least a few per pair.
    assert row["tokens_per_second"] * row["train_seconds"] >= 4 * 8
    assert row["generate_tokens_per_second"] > 0 and 0 <= row["rougeL"] <= 1
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| model | quant | device | peak_memory_mb | memory_kind |")
    assert "tokens_per_second | generate_tokens_per_second" in lines[0]
    assert "failed: " in lines[2] and lines[3].startswith(f"| {chat_dir} | none | cpu |")


def test_a_random_weights_folder_has_the_real_architecture_and_tokenizer(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bundle, random = _benchmark("device_bundle"), _benchmark("random_weights")
    packed = tmp_path / "bundle" / "tiny"
    bundle["pack_model_files"](tiny_llama_dir, packed)
    names = {p.name for p in packed.iterdir()}
    assert "tokenizer.json.gz" in names and not any(n.endswith(".safetensors") for n in names)
    first = random["write_random_model"](packed, tmp_path / "a", seed=3)
    again = random["write_random_model"](packed, tmp_path / "b", seed=3)
    real = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict()
    made = AutoModelForCausalLM.from_pretrained(first).state_dict()
    same_seed = AutoModelForCausalLM.from_pretrained(again).state_dict()
    assert {k: v.shape for k, v in made.items()} == {k: v.shape for k, v in real.items()}
    assert not all(made[k].equal(real[k]) for k in real)  # random, not the real weights
    assert all(made[k].equal(same_seed[k]) for k in made)  # seeded
    text = "where is my parcel"
    tokens = AutoTokenizer.from_pretrained(first)(text).input_ids
    assert tokens == AutoTokenizer.from_pretrained(tiny_llama_dir)(text).input_ids


def test_a_slimmed_wheel_keeps_the_named_libraries_and_installs(tmp_path):
    import re
    import zipfile

    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    files = {
        "pkg/__init__.py": b"VALUE = 1\n",
        "pkg/lib_cpu.so": b"cpu",
        "pkg/lib_cuda118.so": b"old" * 1000,
        "pkg/lib_cuda130.so": b"new",
        "pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n",
        "pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        "pkg-1.0.dist-info/RECORD": b"",
    }
    with zipfile.ZipFile(wheel, "w") as out:
        for name, data in files.items():
            out.writestr(name, data)
    saved = _benchmark("device_bundle")["slim_wheel"](wheel, re.compile(r"lib_(cpu|cuda13\d)\.so$"))
    assert saved > 0
    with zipfile.ZipFile(wheel) as slim:
        kept = set(slim.namelist())
        record = slim.read("pkg-1.0.dist-info/RECORD").decode().splitlines()
    assert "pkg/lib_cuda118.so" not in kept and {"pkg/lib_cpu.so", "pkg/lib_cuda130.so"} <= kept
    assert {line.split(",")[0] for line in record} == kept
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    subprocess.run([*install, "--target", str(target), str(wheel)], check=True)
    assert (target / "pkg" / "lib_cuda130.so").read_bytes() == b"new"
