"""The docs match the code: every document citation resolves inside the repository, and what the docs name
exists.

Code, tests, configs, benchmarks, search spaces and README.md cite the reference behaviour as
`docs/<page>.md §N.M` (lists `§1, §2` and ranges `§1.1-§1.3` after one page name). Each cited page must exist
and hold a markdown heading with that section number; a `§` outside such a citation, or a citation of the
external `reference.md`, is an error. Inside docs/, section numbers are unique across pages, so a bare `§N.M`
must be a heading of some page, and relative links between pages must resolve.

Every training-config key (`optim.lr`) and metric (`target_im`) that README.md and docs/ name exists, and so
does every command and flag of an `msl` or `msl-study` command line they write (checked against the CLI's
argparse parsers; other programs' command lines, such as the reference's, are not checked), and every
scheduler (`scheduler: {name: asha}`, `msl-study replay --scheduler`), module, function and repository path
they name. Every YAML example of README.md, docs/ and the code's docstrings parses and validates as a
training config or a search space.
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


# A command of the `msl` or `msl-study` CLI as README.md and docs/ write it: in a fenced block (after optional
# `VAR=value` assignments, up to a comment) or as an inline code span that starts with one.
FENCE = re.compile(r"^```[^\n]*\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`(?P<code>[^`]+)`")
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?P<command>msl(?:-study)?\s.*)$", re.DOTALL)


def documented_commands(text: str) -> list[str]:
    """The `msl` and `msl-study` command lines of a markdown text."""
    commands = []
    for block in FENCE.finditer(text):
        for line in block["body"].replace("\\\n", " ").splitlines():
            match = COMMAND.match(line.split(" #")[0].strip())
            commands += [match["command"]] if match else []
    for span in INLINE_CODE.finditer(FENCE.sub("", text)):
        match = COMMAND.match(span["code"].strip())
        commands += [match["command"]] if match else []
    return commands


def _subcommands(parser) -> dict:
    import argparse

    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices if actions else {}


def command_problems(command: str, parsers: dict) -> list[str]:
    """What in one documented command line the CLI's argparse parsers do not have: a subcommand or a flag."""
    words = command.split()
    parser, path, problems = parsers[words[0]], [words[0]], []
    for word in words[1:]:
        if word in ("...", "…"):
            break
        flag = re.match(r"\[?(?P<flag>--[a-z][a-z-]*)", word)
        if flag:
            if flag["flag"] not in parser._option_string_actions:
                problems.append(f"`{command}`: {' '.join(path)} has no option {flag['flag']}")
        elif _subcommands(parser) and not word.startswith(("-", "[")):
            if word not in _subcommands(parser):
                problems.append(f"`{command}`: {' '.join(path)} has no command {word!r}")
                break
            parser = _subcommands(parser)[word]
            path.append(word)
    return problems


def _parsers() -> dict:
    from msl.cli import build_parser as msl_parser
    from study.cli import build_parser as study_parser

    return {"msl": msl_parser(), "msl-study": study_parser()}


def test_every_command_and_flag_the_docs_name_exists():
    problems, seen = [], []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for command in documented_commands(page.read_text(encoding="utf-8")):
            seen.append(command)
            problems += [f"{page.name}: {problem}" for problem in command_problems(command, _parsers())]
    assert not problems, "\n".join(problems)
    assert len(seen) > 20 and any(c.startswith("msl-study run") for c in seen), seen


# `msl.module.name` or `study.module.function()` in backticks, and a repository path such as `study/space.py`
PYTHON_NAME = re.compile(r"`(?P<name>(?:msl|study|benchmarks|tests)(?:\.[A-Za-z_]\w*)+)(?:\(\))?`")
REPO_PATH = re.compile(
    r"(?<![\w/.])(?P<path>(?:msl|study|benchmarks|tests|docs|search_spaces|results)/[\w./-]*\w)"
)


def _resolves(dotted: str) -> bool:
    """Whether `dotted` is a module of the repository or an attribute of one."""
    import importlib

    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


def test_every_module_function_and_path_the_docs_name_exists():
    problems, named = [], 0
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for match in PYTHON_NAME.finditer(text):
            named += 1
            problems += [] if _resolves(match["name"]) else [f"{page.name}: {match['name']} does not exist"]
        for match in REPO_PATH.finditer(text):
            named += 1
            if not (ROOT / match["path"]).exists():
                problems.append(f"{page.name}: {match['path']} does not exist")
    assert not problems, "\n".join(problems)
    assert named > 50, named


def test_the_readme_names_every_module_of_study():
    layout = (ROOT / "README.md").read_text(encoding="utf-8").split("## Layout", 1)[1]
    named = set(re.findall(r"`(\w+\.py)`", layout))
    missing = sorted({p.name for p in (ROOT / "study").glob("*.py") if p.name != "__init__.py"} - named)
    assert not missing, f"README.md's Layout section has no row for study/ modules {missing}"


SCHEDULER_NAME = re.compile(r"`(?:scheduler: \{)?name: (?P<name>[a-z_]+)")


def test_every_scheduler_the_docs_name_exists():
    """`scheduler: {name: X}` and `name: X` in inline code name a space's scheduler; `msl-study replay
    --scheduler X,Y` names replayed ones."""
    from study.replay import SCHEDULERS as REPLAYED
    from study.space import SCHEDULERS

    problems, named = [], 0
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for match in SCHEDULER_NAME.finditer(text):
            named += 1
            if match["name"] not in SCHEDULERS:
                problems.append(
                    f"{page.name}: {match[0]}` is no scheduler of a space ({', '.join(SCHEDULERS)})"
                )
        for command in documented_commands(text):
            for listed in re.findall(r"--scheduler\s+(\S+)", command):
                named += 1
                problems += [
                    f"{page.name}: `{command}`: {name} is no replayed scheduler ({', '.join(REPLAYED)})"
                    for name in listed.split(",")
                    if name not in REPLAYED
                ]
    assert not problems, "\n".join(problems)
    assert named >= 4, "no scheduler named: is the pattern still right?"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("msl train run.yaml --out runs/a --resume", []),
        ("msl data verify --dataset gta5 --root $GTA5_ROOT --num-classes 13", []),
        ("msl --debug ...", []),
        ("msl-study run space.yaml [--dry-run]", []),
        ("msl train run.yaml --dry-run", ["msl train has no option --dry-run"]),
        ("msl-study reprot studies/a", ["msl-study has no command 'reprot'"]),
        ("msl data synth --out d --seeds 1", ["msl data synth has no option --seeds"]),
    ],
)
def test_the_command_checker_catches_unknown_commands_and_flags(command, expected):
    problems = command_problems(command, _parsers())
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem


def test_documented_commands_are_found_in_fences_and_inline_code():
    text = (
        "Run `msl-study run\nspace.yaml --dry-run`, not `--flag` alone.\n\n"
        "```bash\nMSL_SYNTH=$PWD/d msl-study run s.yaml --report   # a comment --no\n"
        "msl train a.yaml \\\n  --out b\npython -m other --x\n```\n"
    )
    assert documented_commands(text) == [
        "msl-study run s.yaml --report",
        "msl train a.yaml    --out b",
        "msl-study run\nspace.yaml --dry-run",
    ]


# A YAML example: a fenced ```yaml block of README.md or docs/, or an indented block of those pages (outside
# fences) or of a docstring in the code that starts with `key:`.
YAML_FENCE = re.compile(r"^```ya?ml\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
DOCSTRING_BLOCK = re.compile(r"^(?: {4}[A-Za-z_][\w.]*:(?: |$).*\n?)(?:(?: {4}.*)?\n?)*", re.MULTILINE)
# What a space fragment of the docs runs on when it names no base config of its own
EXAMPLE_BASE = {
    "data": {"source_root": "/data/gta5", "target_root": "/data/cityscapes"},
    "model": {"arch": "deeplab_resnet18_small"},
    "optim": {"iterations": 100},
    "eval": {"every": 10},
}


def yaml_examples() -> list[tuple[str, str]]:
    """(where, text) of every YAML example of README.md, docs/ and the docstrings of the code."""
    import ast
    import textwrap

    examples = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        examples += [(page.name, m["body"]) for m in YAML_FENCE.finditer(text)]
        examples += [
            (page.name, textwrap.dedent(m[0])) for m in DOCSTRING_BLOCK.finditer(FENCE.sub("", text))
        ]
    for name in ("msl", "study", "benchmarks"):
        for path in sorted((ROOT / name).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                is_documented = isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                docstring = ast.get_docstring(node) if is_documented else None
                examples += [
                    (f"{path.relative_to(ROOT)}: {getattr(node, 'name', 'module')}", textwrap.dedent(m[0]))
                    for m in DOCSTRING_BLOCK.finditer(docstring or "")
                ]
    return examples


def yaml_example_problem(text: str, tmp_path: Path) -> str | None:
    """Why a YAML example does not parse, or does not validate as a training config (its keys are config
    sections) or as a search space (else; a fragment without `base` or `config` runs on EXAMPLE_BASE)."""
    import dataclasses

    import yaml

    from msl.config import ConfigError, TrainConfig, load_config
    from study.space import load_space

    try:
        example = yaml.safe_load(text)
    except yaml.YAMLError as error:
        return f"not YAML: {' '.join(str(error).split())}"
    if not isinstance(example, dict):
        return f"expected a mapping, got {example!r}"
    try:
        if set(example) <= {f.name for f in dataclasses.fields(TrainConfig)}:
            load_config(example)
        else:
            base = {} if {"base", "config"} & set(example) else {"config": EXAMPLE_BASE}
            path = tmp_path / "example.yaml"
            path.write_text(yaml.safe_dump({"name": "example", **base, **example}, sort_keys=False))
            load_space(path)
    except ConfigError as error:
        return str(error)
    return None


def test_every_yaml_example_parses_and_validates(tmp_path):
    examples = yaml_examples()
    problems = [
        f"{where}: {problem}"
        for where, text in examples
        if (problem := yaml_example_problem(text, tmp_path)) is not None
    ]
    assert not problems, "\n".join(problems)
    wheres = {where.split(":")[0] for where, _ in examples}
    assert {"README.md", "losses.md", "study/space.py"} <= wheres, wheres


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optim: {lr: 0.1}\nstage: source\n", None),
        ("variants: [maxsquare]\nparams: {optim.lr: {grid: [0.1, 1.0]}}\n", None),
        ("variants: [maxsquare\n", "not YAML"),
        ("optim: {lr: -1}\n", "optim.lr: -1.0 is out of range"),
        ("variants: [maxsquares]\n", "unknown variant 'maxsquares'"),
        ("seeds: [0]\nsearch: {algorithm: grid, num_samples: 0}\n", "search.num_samples: 0 is out of range"),
    ],
)
def test_the_yaml_example_checker_catches_broken_examples(text, expected, tmp_path):
    problem = yaml_example_problem(text, tmp_path)
    assert problem is None if expected is None else expected in problem, problem
