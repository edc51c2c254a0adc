"""The README and docs/ as a reader follows them: every relative link reaches a file, every
`#anchor` a heading of that file, the README stays a guide of at most 25 KB, and its test
command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings (outside code blocks); none for other files."""
    found: set[str] = set()
    if page.suffix != ".md":
        return found
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not followed here
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and anchor not in anchors(linked)):
            broken.append(target)
    return broken


def test_every_relative_link_and_anchor_resolves() -> None:
    assert {page.name: broken_links(page) for page in PAGES} == {page.name: [] for page in PAGES}


def test_the_readme_is_a_guide_of_at_most_25_kb() -> None:
    assert len((ROOT / "README.md").read_bytes()) <= 25_000


def test_the_readmes_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "exec scripts/test\n" in ci
    assert "scripts/test   # the whole test suite" in (ROOT / "README.md").read_text("utf-8")
