"""Every relative link in the user-facing docs resolves: the file exists, and so does the anchor.

Covers README.md, docs/**/*.md, the bundled data cards and the notebooks' Markdown cells, so a
page that moves or a heading that is renamed breaks this test instead of a reader's click.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def markdown_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


def prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lowercase, punctuation dropped, spaces to hyphens, -1 on repeats."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(FENCE.sub("", markdown_of(path))):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def pages() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found += sorted((ROOT / "finetune" / "cards").glob("*.md"))
    return found + sorted((ROOT / "notebooks").glob("*.ipynb"))


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in LINK.findall(prose(markdown_of(page))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix in (".md", ".ipynb") and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading with that anchor in {resolved.name}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    assert broken_links(page) == [], f"{page.relative_to(ROOT)}: broken links"


def test_checker_catches_a_broken_link_and_anchor(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Real heading: with (punctuation)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#real-heading-with-punctuation) [gone](missing.md) "
        "[bad anchor](other.md#nothing) `[in code](missing.md)`\n"
        "```\n[in a block](missing.md)\n```\n[web](https://example.com/x.md)\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nothing: no heading with that anchor in other.md",
    ]
