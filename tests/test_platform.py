"""What differs between machines: locales, text encodings, memory counters, processors.

Python 3.11 opens a text file in the locale's encoding unless told otherwise: on Windows that
is a code page (cp1252, or GBK on a Chinese system), where a Chinese label, reply or path
fails to write, or is written in an encoding the exported scripts then cannot read. So every
read_text, write_text and text-mode open in the engine, the recipes, the benchmarks and the
scripts an export writes names its encoding, and the command line runs end to end on a
machine whose locale is plain ASCII. Peak memory reads in megabytes on Linux, macOS and
Windows, and a run folder names the processor features that decide a CPU run's speed.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).parent.parent
NOT_TEXT = ("Image", "tarfile", "zipfile", "gzip", "archive")  # .open() of images and archives


def _opens_text(call: ast.Call) -> bool:
    """A builtin open() or a path's .open() in text mode (no "b" in its mode)."""
    func = call.func
    if isinstance(func, ast.Attribute):
        if func.attr != "open" or ast.unparse(func.value) in NOT_TEXT:
            return False
        positional = call.args
    elif isinstance(func, ast.Name) and func.id == "open":
        positional = call.args[1:]
    else:
        return False
    mode = next((k.value for k in call.keywords if k.arg == "mode"), None)
    mode = mode or (positional[0] if positional else None)
    return mode is None or (isinstance(mode, ast.Constant) and "b" not in str(mode.value))


def unnamed_encodings(source: str) -> list[int]:
    """Lines of `source` that read or write text without naming an encoding."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr in ("read_text", "write_text")) or (
            _opens_text(node)
        ):
            lines.append(node.lineno)
    return sorted(lines)


def exported_scripts() -> dict[str, str]:
    """The Python files `finetune export` writes, as the export writes them."""
    from finetune.modeling import export, image_export, reply_export

    return {
        "classifier predict.py": export.PREDICT_PY,
        "image predict.py": image_export.predict_source(),
        "reply.py": reply_export.reply_source(),
    }


def test_the_check_finds_text_read_or_written_without_an_encoding():
    source = (
        "from pathlib import Path\n"
        "Path('a').read_text()\n"
        "Path('a').write_text('x', encoding='utf-8')\n"
        "open('a')\n"
        "open('a', 'rb')\n"
        "Path('a').open('w')\n"
        "Path('a').open(mode='rb')\n"
        "Image.open('a')\n"
    )
    assert unnamed_encodings(source) == [2, 4, 6]


def test_every_text_file_read_or_written_names_its_encoding():
    files = [*ROOT.glob("finetune/**/*.py"), *ROOT.glob("recipes/**/*.py")]
    files += [*ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("tests/test_platform.py")]
    sources = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in files}
    sources.update(exported_scripts())
    found = {name: lines for name, text in sources.items() if (lines := unnamed_encodings(text))}
    assert not found, f'add encoding="utf-8" at these lines: {found}'


# Plain ASCII: no UTF-8 mode, no coercion of the C locale to UTF-8 (Python would apply both).
ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def finetune_in_ascii_locale(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **ASCII_LOCALE, "HF_HUB_OFFLINE": "1", "PYTHONWARNDEFAULTENCODING": "1"}
    # The engine's own text I/O without an encoding fails the command; libraries' is theirs.
    warn = "import warnings; warnings.filterwarnings('ignore', category=EncodingWarning); "
    warn += "warnings.filterwarnings('error', category=EncodingWarning, "
    warn += "module=r'(finetune|recipes)(\\.|$)'); "
    command = [sys.executable, "-X", "utf8=0", "-c", warn + "from finetune.cli import main; main()"]
    return subprocess.run(
        [*command, *args], capture_output=True, cwd=cwd, env=env, timeout=600, check=False
    )


def test_a_chinese_run_trains_predicts_and_exports_in_an_ascii_locale(
    tiny_llama_dir, tiny_model_dir, tmp_path
):
    import generation_recipe
    from test_chinese import PAIRS_ZH

    # Chinese texts and labels; ASCII paths and arguments (an ASCII locale turns non-ASCII
    # ones into undecodable bytes; Windows passes both in Unicode whatever its code page).
    args, evaluation, run = generation_recipe.chinese_reply_run_args(
        tiny_llama_dir, tiny_model_dir, tmp_path, PAIRS_ZH
    )
    exported = tmp_path / "exported"
    done = finetune_in_ascii_locale(*args, cwd=tmp_path)
    assert done.returncode == 0, failed(done)
    kept = json.loads((run / "retrieval.json").read_text(encoding="utf-8"))
    assert PAIRS_ZH[0][1] in kept["replies"]
    assert PAIRS_ZH[0][2] in (run / "report.md").read_text(encoding="utf-8")
    done = finetune_in_ascii_locale(
        "customer-service", "predict", "--run", str(run), "--data", str(evaluation),
        "--output", str(tmp_path / "replies.csv"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, failed(done)
    assert pd.read_csv(tmp_path / "replies.csv")["message"].tolist() == [r[0] for r in PAIRS_ZH]
    done = finetune_in_ascii_locale(
        "export", "--run", str(run), "--output", str(exported), cwd=tmp_path
    )
    assert done.returncode == 0, failed(done)
    served = (exported / "retrieval" / "replies.json").read_text(encoding="utf-8")
    assert PAIRS_ZH[0][1] in json.loads(served)


def failed(done: subprocess.CompletedProcess) -> str:
    return (done.stdout + done.stderr).decode("utf-8", "replace")[-3000:]


def test_an_error_naming_chinese_columns_is_one_line_on_an_ascii_console(tmp_path):
    data = tmp_path / "pairs.csv"
    pd.DataFrame({"消息": ["你好"], "回复": ["您好"]}).to_csv(data, index=False)
    done = finetune_in_ascii_locale(
        "customer-service", "train", "--task", "reply", "--data", str(data), cwd=tmp_path
    )
    assert done.returncode == 2, failed(done)  # the line, not a crash while printing it
    assert done.stderr.decode("utf-8").startswith(
        f"error: {data}: no column 'message' (columns: 消息, 回复)."
    )


def test_the_command_line_escapes_what_the_console_cannot_encode(monkeypatch):
    import io

    from finetune import runtime

    console = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")  # a Western Windows console
    monkeypatch.setattr(sys, "stdout", console)
    runtime.configure()
    print("intent 物流: café")  # runtime.warn_now and the progress lines print
    console.flush()
    assert console.buffer.getvalue().decode("cp1252") == "intent \\u7269\\u6d41: café\n"


def test_peak_memory_reads_in_megabytes_on_macos_and_on_windows(monkeypatch):
    import psutil  # noqa: F401  (imported first: it refuses to import on a pretended platform)

    from finetune import runtime

    linux = runtime.peak_memory_mb()
    assert 50 < linux < 24 * 1024
    monkeypatch.setattr(sys, "platform", "darwin")  # ru_maxrss counts bytes there
    assert runtime.peak_memory_mb() == pytest.approx(linux / 1024, rel=0.05)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setitem(sys.modules, "resource", None)  # Windows has no getrusage
    assert 0.2 * linux < runtime.peak_memory_mb() <= 1.05 * linux  # the working set


def test_the_environment_names_the_processor_features_that_decide_its_speed(tmp_path):
    from finetune import runtime

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 1\n"
        "flags\t\t: fpu avx2 fma avx512f\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n",
        encoding="utf-8",
    )
    assert runtime._cpu(cpuinfo) == {
        "processor": "AMD EPYC",
        "cpu_model": "family 25 model 1",
        "cpu_features": ["avx2", "avx512f"],
    }
    assert runtime._cpu(tmp_path / "none") == {"processor": platform.processor()}  # not Linux
    assert "cpu_features" in runtime.environment("cpu", 0)
