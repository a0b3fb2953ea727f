"""`msl-study report DIR [--out DIR]`: the subcommand, registered by `study.cli` through
`add_report_parser`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _report(args: argparse.Namespace) -> int:
    from study import layout
    from study.report import build_report

    study_dir = layout.require_study(Path(args.study))
    print(f"report written to {build_report(study_dir, args.out)}")
    return 0


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `report` on the `msl-study` subcommands; works on finished, running or partly failed
    studies."""
    report = subparsers.add_parser(
        "report", help="tables (md, csv, tex) and plots of a finished or running study"
    )
    report.add_argument("study", help="the study directory")
    report.add_argument("--out", default=None, help="output directory (default: <study>/report)")
    report.set_defaults(handler=_report)
    return report
