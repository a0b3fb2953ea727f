"""Every document citation in the code resolves inside the repository.

Code, tests, configs, benchmarks, search spaces and README.md cite the reference behaviour as
`docs/<page>.md §N.M` (lists `§1, §2` and ranges `§1.1-§1.3` after one page name). Each cited page must exist
and hold a markdown heading with that section number; a `§` outside such a citation, or a citation of the
external `reference.md`, is an error. Inside docs/, section numbers are unique across pages, so a bare `§N.M`
must be a heading of some page, and relative links between pages must resolve.

Every training-config key (`optim.lr`) and metric (`target_im`) that README.md and docs/ name exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCANNED = ("msl", "study", "benchmarks", "tests", "search_spaces", "README.md")
SUFFIXES = {".py", ".yaml", ".yml", ".md", ".toml", ".txt", ".cfg"}
THIS_FILE = Path(__file__).resolve()

SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
# A page, then one or more sections separated by spaces, commas, "and" or a range dash.
CITATION = re.compile(
    r"docs/(?P<page>[\w.-]+\.md)"
    r"(?P<sections>(?:(?:\s*,\s*|\s*[-–]\s*|\s+and\s+|\s+)§\d+(?:\.\d+)*)*)"
)
HEADING = re.compile(r"^#+\s.*$", re.MULTILINE)
LINK = re.compile(r"\]\((?P<target>[^)#\s]+\.md)(?:#[^)]*)?\)")


def _has_heading(text: str, section: str) -> bool:
    """Whether a markdown heading of `text` carries `§section` exactly (§1.2 is not §1.20 nor §1.2.1)."""
    pattern = re.compile(rf"§{re.escape(section)}(?!\.?\d)")
    return any(pattern.search(heading) for heading in HEADING.findall(text))


def citation_problems(text: str, where: str, docs_dir: Path) -> list[str]:
    """What is wrong with the document citations in `text` (from the file `where`), one line each."""
    problems = []
    if "reference.md" in text:
        problems.append(f"{where}: cites reference.md, a file outside the repository; cite docs/<page>.md §N")
    for match in CITATION.finditer(text):
        page = docs_dir / match["page"]
        if not page.is_file():
            problems.append(f"{where}: cites docs/{match['page']}, which does not exist")
            continue
        page_text = page.read_text(encoding="utf-8")
        for section in SECTION.findall(match["sections"]):
            if not _has_heading(page_text, section):
                problems.append(f"{where}: cites docs/{match['page']} §{section}, which has no such heading")
    for bare in SECTION.finditer(CITATION.sub("", text)):
        problems.append(f"{where}: §{bare[1]} without a page; write docs/<page>.md §{bare[1]}")
    return problems


def _scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [
            p
            for p in candidates
            if p.is_file()
            and p.suffix in SUFFIXES
            and "__pycache__" not in p.parts
            and p.resolve() != THIS_FILE
        ]
    return files


def test_scanned_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in _scanned_files()}
    assert {"msl/losses.py", "msl/configs/gta5_cityscapes.yaml", "README.md", "tests/test_losses.py"} <= names


def test_code_cites_docs_that_exist():
    problems = []
    cited = 0
    for path in _scanned_files():
        text = path.read_text(encoding="utf-8")
        cited += len(CITATION.findall(text))
        problems += citation_problems(text, path.relative_to(ROOT).as_posix(), DOCS)
    assert not problems, "\n".join(problems)
    assert cited > 0, "no docs citation found: is the pattern still right?"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see docs/losses.md §1.2 item 4", []),
        ("(docs/losses.md §1.1-§1.3)", []),
        ("(docs/datasets.md §5.2, §5.3), docs/metrics.md §6.1", []),
        ("# docs/losses.md §1.2: weights", []),
        ("see docs/losses.md §1.10", ["docs/losses.md §1.10, which has no such heading"]),
        ("see docs/losses.md §1.20", ["docs/losses.md §1.20, which has no such heading"]),
        ("(docs/losses.md §1.1, §7.3)", ["docs/losses.md §7.3, which has no such heading"]),
        ("see docs/nowhere.md §1", ["docs/nowhere.md, which does not exist"]),
        ("as in §1.2", ["§1.2 without a page"]),
        ("(reference.md §1.2)", ["cites reference.md", "§1.2 without a page"]),
    ],
)
def test_citation_checker_catches_broken_citations(text, expected):
    problems = citation_problems(text, "x.py", DOCS)
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem


def test_docs_sections_are_unique_and_cross_references_resolve():
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds no pages"
    owners: dict[str, list[str]] = {}
    for page in pages:
        for heading in HEADING.findall(page.read_text(encoding="utf-8")):
            for section in SECTION.findall(heading):
                owners.setdefault(section, []).append(page.name)
    duplicated = {section: names for section, names in owners.items() if len(names) > 1}
    assert not duplicated, f"section numbers must be unique across docs/: {duplicated}"
    problems = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        problems += [
            f"{page.name}: §{s} is no heading in docs/" for s in SECTION.findall(text) if s not in owners
        ]
        problems += [
            f"{page.name}: link to {link['target']} does not resolve"
            for link in LINK.finditer(text)
            if not (page.parent / link["target"]).is_file()
        ]
    assert not problems, "\n".join(problems)


def test_readme_links_to_the_docs():
    assert "docs/README.md" in (ROOT / "README.md").read_text(encoding="utf-8")


# `section.key` or `section.key: value` in backticks, for the sections of a training config (not a file name
# such as `selection.py`)
CONFIG_KEY = re.compile(r"`(?P<section>[a-z_]+)\.(?!(?:py|md|yaml|json)`)(?P<key>[a-z_0-9]+)(?::[^`]*)?`")
METRIC_NAME = re.compile(r"`(?P<name>(?:target|oracle|source_val)_[a-z0-9_]+)`")


def test_every_config_key_and_metric_the_docs_name_exists():
    import dataclasses

    from msl.config import TrainConfig
    from msl.objectives import METRIC_MODES

    sections = {
        f.name: {g.name for g in dataclasses.fields(f.default_factory)}
        for f in dataclasses.fields(TrainConfig)
        if f.default_factory is not dataclasses.MISSING
    }
    problems = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        problems += [
            f"{page.name}: {match[0]} is no config key"
            for match in CONFIG_KEY.finditer(text)
            if match["section"] in sections and match["key"] not in sections[match["section"]]
        ]
        problems += [
            f"{page.name}: {match[0]} is no metric a run reports"
            for match in METRIC_NAME.finditer(text)
            if match["name"] not in METRIC_MODES
        ]
    assert not problems, "\n".join(problems)
