"""The `msl-study` command: run, resume and report studies described by search space files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msl.errors import add_debug_option, run_command
from study.report_cli import add_report_parser


def _run(args: argparse.Namespace) -> int:
    from study.space import describe_plan, load_space

    space = load_space(args.space)  # validates everything before Ray starts
    print(describe_plan(space))
    if args.dry_run:
        return 0
    from study.cluster import prepare_cluster
    from study.runner import create_study, expand_paths, run_study_dir

    space = expand_paths(space)
    prepare_cluster(space, args.address)  # before the study directory exists: a refused run leaves none
    study_dir = create_study(space, name=args.name, storage=args.storage)
    run_study_dir(study_dir, address=args.address, space=space)
    if args.report:
        from study.report import build_report

        print(f"report: {build_report(study_dir)}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from study import layout
    from study.runner import run_study_dir

    study_dir = layout.require_study(Path(args.study).resolve())
    run_study_dir(study_dir, address=args.address)
    return 0


def _status(args: argparse.Namespace) -> int:
    from study.status import format_status, study_status

    print(format_status(study_status(args.study)))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from study.compare import format_comparison

    print(format_comparison(args.studies))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msl-study", description=__doc__)
    add_debug_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="validate a search space file and run it as a Ray Tune study")
    run.add_argument("space", help="search space YAML (see search_spaces/)")
    run.add_argument("--name", default=None, help="study name (default: the space's name)")
    run.add_argument(
        "--storage", default="studies", help="folder that holds studies; shared storage on a cluster"
    )
    run.add_argument(
        "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)"
    )
    run.add_argument("--dry-run", action="store_true", help="validate and print the trial plan, run nothing")
    run.add_argument("--report", action="store_true", help="build the report when the study ends")
    run.set_defaults(handler=_run)

    resume = commands.add_parser(
        "resume", help="continue a study whose driver stopped; nothing done is redone"
    )
    resume.add_argument("study", help="the study directory")
    resume.add_argument("--address", default=None)
    resume.set_defaults(handler=_resume)

    add_report_parser(commands)
    status = commands.add_parser(
        "status", help="trials by state, best so far, ETA and errors of a running or stopped study"
    )
    status.add_argument("study", help="the study directory")
    status.set_defaults(handler=_status)
    compare = commands.add_parser("compare", help="the variant tables of several studies side by side")
    compare.add_argument("studies", nargs="+", help="study directories")
    compare.set_defaults(handler=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
