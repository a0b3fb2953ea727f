"""`msl-study report DIR [--out DIR]`: the subcommand, registered by `study.cli` through `add_report_parser`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _report(args: argparse.Namespace) -> int:
    from study import layout
    from study.report import build_report

    study_dir = Path(args.study)
    if not (study_dir / layout.STUDY_FILE).is_file():
        print(f"msl-study report: {study_dir} is not a study directory (no {layout.STUDY_FILE})", file=sys.stderr)
        return 2
    print(f"report written to {build_report(study_dir, args.out)}")
    return 0


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `report` on the `msl-study` subcommands; works on finished, running or partly failed studies."""
    report = subparsers.add_parser("report", help="tables (md, csv, tex) and plots of a finished or running study")
    report.add_argument("study", help="the study directory")
    report.add_argument("--out", default=None, help="output directory (default: <study>/report)")
    report.set_defaults(handler=_report)
    return report
