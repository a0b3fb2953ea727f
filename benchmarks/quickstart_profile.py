"""Where a `make quickstart` run's time goes, from the timed log of benchmarks/quickstart_timed.sh.

Prints a markdown table of phases (setting up .venv, generating the benchmark, Ray start, source models, each
experiment, the report) with their seconds, and with `--clean-log` writes the study's own lines of the log,
paths relative to the clone, without pip's messages and progress bars: what results/quickstart/run.log holds.

Usage: python benchmarks/quickstart_profile.py TIMED_LOG [--clean-log results/quickstart/run.log]
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta
from pathlib import Path

# Lines of the run kept in the clean log: make's commands, the generator's summary, the plan, the study's
# progress.
KEPT = re.compile(
    r"^(\.venv/bin/msl|MSL_SYNTH=|\s+--name|wrote |\d+ images of|  \S|study '|\[msl-study|report: "
    r"|END-TO-END)"
)
DROPPED = re.compile(r"pip-build-env|^\s*!!|\*{10}|WheelFile")  # pip's and setuptools' messages


def timed_lines(path: Path) -> list[tuple[datetime, str]]:
    """(time, text) of each line; times past midnight keep increasing."""
    lines, previous, offset = [], None, timedelta(0)
    for raw in path.read_text(errors="replace").splitlines():
        stamp, _, text = raw.partition(" ")
        if not re.fullmatch(r"\d\d:\d\d:\d\d", stamp):  # an unstamped line: it came with the previous one
            lines.append((previous, raw))
            continue
        when = datetime.strptime(stamp, "%H:%M:%S") + offset
        if previous is not None and when < previous:
            offset += timedelta(days=1)
            when += timedelta(days=1)
        previous = when
        lines.append((when, text))
    return lines


def phases(lines: list[tuple[datetime, str]]) -> list[tuple[str, float]]:
    """Named phases, each from its first line to the next phase's first line."""
    marks: list[tuple[str, datetime]] = [("set up .venv (pip install), generate the benchmark", lines[0][0])]
    for when, text in lines:
        if text.startswith("MSL_SYNTH="):
            marks.append(("validate the space, start Ray", when))
        elif "source model for seed" in text and "training" in text and not marks[-1][0].startswith("source"):
            marks.append(("source models", when))
        elif match := re.match(r"\[msl-study [\d:]+\] experiment '([^']+)': (resuming|\d+ trials)", text):
            marks.append((f"experiment {match.group(1)}", when))
        elif "done in" in text and text.startswith("[msl-study"):
            marks.append(("report", when))
        elif text.startswith("END-TO-END"):
            marks.append(("end", when))
    return [(name, (marks[i + 1][1] - when).total_seconds()) for i, (name, when) in enumerate(marks[:-1])]


def clean(lines: list[tuple[datetime, str]], root: str) -> str:
    kept = [
        text.replace(root.rstrip("/") + "/", "").replace(root, ".")
        for _, text in lines
        if KEPT.match(text) and not DROPPED.search(text)
    ]
    return "\n".join(kept) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="timed.log written by benchmarks/quickstart_timed.sh")
    parser.add_argument("--clean-log", type=Path, default=None, help="write the study's own lines here")
    parser.add_argument(
        "--root",
        default=None,
        help="the clone's path, made relative in the clean log (default: the log's folder)",
    )
    args = parser.parse_args()
    lines = timed_lines(args.log)
    span = (lines[-1][0] - lines[0][0]).total_seconds()
    measured = re.match(
        r"END-TO-END (\d+) s", lines[-1][1]
    )  # the shell's own count, from before `make` started
    total = float(measured.group(1)) if measured else span
    rows = [("before make's first line of output", total - span), *phases(lines)]
    print("| phase | seconds | share |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.0f} | {100 * seconds / total:.0f}% |")
    print(f"| **end to end** | **{total:.0f}** | 100% |")
    if args.clean_log:
        args.clean_log.write_text(clean(lines, args.root or str(args.log.resolve().parent)))


if __name__ == "__main__":
    main()
