"""The documentation stands on its own: every relative link in a tracked Markdown file reaches a tracked
file (and, with `#anchor`, a heading of it, as GitHub names headings), and no tracked file points at the
facts file that lives outside the repository; the facts the code relies on are in docs/science.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The name of the facts file kept outside the repository, spelled in two parts so that this file does
# not match its own check.
FACTS_WORD = "REFER" "ENCE"
# A citation: the file's name, or its word as a name ("<word> section 4", "the <word> way"); identifiers
# such as RATIO_ATTACKS (the attacks that read reference models) are not citations.
CITATION = re.compile(rf"(?i:{FACTS_WORD}\.md)|\b{FACTS_WORD}\b")  # the bare word counts in capitals only
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _tracked() -> list[str]:
    """The repository's tracked files, as git lists them (paths relative to the root)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


TRACKED = _tracked()
MARKDOWN = [p for p in TRACKED if p.endswith(".md")]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans removed."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, re.sub(r"`[^`]*`", "", line)))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text without markup, lower case, punctuation dropped (letters,
    digits, '_' and '-' kept), spaces as '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's ATX headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: str) -> list[tuple[int, str]]:
    """(line, target) of every inline link and image of a Markdown file, outside code."""
    text = (ROOT / path).read_text(encoding="utf-8")
    return [(number, match.group(1)) for number, line in _prose_lines(text) for match in LINK.finditer(line)]


def broken_link(source: str, target: str) -> str | None:
    """Why `target`, a link in the tracked Markdown file `source`, does not resolve (None when it does).
    Links with a scheme (https:, mailto:) are not checked."""
    if not target or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
        return None
    path, _, anchor = unquote(target).partition("#")
    if path.startswith("/"):
        return "an absolute path (GitHub reads it from the site root): link relative to the file"
    resolved = (ROOT / source).parent / path if path else ROOT / source
    try:
        relative = resolved.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return "points outside the repository"
    if relative != "." and relative not in TRACKED and not any(p.startswith(relative + "/") for p in TRACKED):
        return f"{relative} is not a tracked file or folder"
    if anchor and relative.endswith(".md") and anchor not in (known := anchors(ROOT / relative)):
        return f"{relative} has no heading with the anchor #{anchor} (it has: {', '.join(sorted(known))})"
    return None


def test_the_link_checker_itself():
    assert slug("Split ratios (paper A.5, Table 2)") == "split-ratios-paper-a5-table-2"
    assert slug("The paper and its authors' code: what miaray decided") == \
        "the-paper-and-its-authors-code-what-miaray-decided"
    assert slug("`tpr_at_fpr_0.01` and [links](x.md)") == "tpr_at_fpr_001-and-links"
    assert links("README.md")  # the README links to the docs
    assert broken_link("README.md", "docs/science.md#metrics-of-a-row") is None
    assert broken_link("README.md", "https://example.org/x") is None
    assert "not a tracked file" in broken_link("docs/store.md", "columns.md")
    assert "no heading" in broken_link("README.md", "docs/science.md#no-such-section")
    assert "outside the repository" in broken_link("README.md", "../elsewhere/facts.md")
    assert CITATION.search(f"({FACTS_WORD} section 4)") and CITATION.search(f"see {FACTS_WORD.lower()}.md")
    assert not CITATION.search(f"{FACTS_WORD}_ATTACKS, {FACTS_WORD}_SEED_OFFSET")
    assert not CITATION.search("the authors' code and reference models")


@pytest.mark.parametrize("source", MARKDOWN)
def test_every_relative_link_resolves(source):
    problems = [f"{source}:{line}: ({target}) {why}" for line, target in links(source)
                if (why := broken_link(source, target))]
    assert not problems, "\n".join(problems)


def test_no_tracked_file_cites_the_facts_file_outside_the_repository():
    citing = []
    for path in TRACKED:
        try:
            text = (ROOT / path).read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a binary file
            continue
        citing += [f"{path}:{number}: {line.strip()}" for number, line in enumerate(text.splitlines(), 1)
                   if CITATION.search(line)]
    assert not citing, ("state the fact in docs/ (mostly docs/science.md, 'Facts the code relies on') and point "
                        "there instead:\n" + "\n".join(citing))


def test_the_science_page_states_the_facts_the_code_points_to():
    """Every `docs/science.md, Section` pointer in the code and the docs names a heading of docs/science.md."""
    headings = anchors(ROOT / "docs" / "science.md")
    assert "facts-the-code-relies-on" in headings
    pointer = re.compile(r"docs/science\.md(?:,\s+|\s+\()([A-Z][\w ]*?)(?=[).;:]|$)", re.M)  # ", Name" or " (Name)"
    pointers = [(path, name) for path in TRACKED if path.endswith((".py", ".md"))
                for name in pointer.findall((ROOT / path).read_text(encoding="utf-8"))]
    assert pointers
    missing = [f"{path}: docs/science.md, {name}" for path, name in pointers if slug(name) not in headings]
    assert not missing, "\n".join(missing)
