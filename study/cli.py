"""The `msl-study` command: run, resume and report studies described by search space files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msl.errors import add_debug_option, run_command
from study.report_cli import add_report_parser


def _run(args: argparse.Namespace) -> int:
    from study.preflight import check_before_ray
    from study.runner import expand_paths, study_path
    from study.space import describe_plan, load_space

    space = load_space(args.space)
    print(describe_plan(space))
    space = expand_paths(space)
    check_before_ray(space, study_path(space, args.name, args.storage), args.address)  # as --dry-run does
    if args.dry_run:
        print("dry run: the space, its data, the study name and the resources check out; nothing was started")
        return 0
    from study.cluster import prepare_cluster
    from study.runner import create_study, run_study_dir

    prepare_cluster(space, args.address)  # before the study directory exists: a refused run leaves none
    study_dir = create_study(space, name=args.name, storage=args.storage)
    run_study_dir(study_dir, address=args.address, space=space)
    if args.report:
        from study.report import build_report

        print(f"report: {build_report(study_dir)}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from study import layout
    from study.preflight import check_data
    from study.runner import expand_paths, run_study_dir
    from study.space import load_space

    study_dir = layout.require_study(Path(args.study).resolve())
    space = expand_paths(load_space(study_dir / layout.SPACE_FILE))
    check_data(space)  # before Ray starts: a dataset moved since the study began
    run_study_dir(study_dir, address=args.address, space=space)
    return 0


def _status(args: argparse.Namespace) -> int:
    from study.status import format_status, study_status

    print(format_status(study_status(args.study)))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from study.compare import format_comparison

    text, compared = format_comparison(args.studies)
    print(text)
    return 0 if compared else 1


def _replay(args: argparse.Namespace) -> int:
    from study import layout
    from study.replay import SCHEDULERS, Setting, check_replayable, replay_table, write_replay
    from study.results import load_study

    study_dir = layout.require_study(Path(args.study).resolve())
    results = load_study(study_dir)
    if args.experiment not in results.plans:
        raise ValueError(
            f"--experiment: {study_dir} has no experiment {args.experiment!r}; it has "
            f"{', '.join(results.plans) or 'none with a plan yet'}"
        )
    exp = results.experiment(args.experiment)
    check_replayable(exp)
    settings = [
        Setting(scheduler, grace, reduction)
        for scheduler in args.scheduler or SCHEDULERS
        for grace in args.grace or [min(exp.evals["iteration"])]
        for reduction in args.reduction or [2, 3, 4]
    ]
    table = replay_table(exp, settings, args.concurrency)
    markdown, csv = write_replay(exp, table, Path(args.out) if args.out else study_dir / "replay")
    print(markdown.read_text() + f"\nwritten: {markdown} and {csv}")
    return 0


def _numbers(text: str) -> list[int]:
    try:
        return [int(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, got {text!r}"
        ) from None


def _add_replay_parser(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser(
        "replay",
        help="what pruning schedulers would have saved and lost on an experiment whose trials all ran to "
        "the end (Ray's own scheduler classes over the recorded evaluations)",
    )
    replay.add_argument("study", help="the study directory")
    replay.add_argument("--experiment", required=True, help="an experiment whose trials all ran to the end")
    replay.add_argument(
        "--scheduler",
        type=lambda text: text.split(","),
        help="asha, hyperband, successive_halving, top_k, comma-separated (default: all)",
    )
    replay.add_argument(
        "--grace", type=_numbers, help="grace periods, e.g. 10,20 (default: the first evaluation)"
    )
    replay.add_argument("--reduction", type=_numbers, help="reduction factors, e.g. 2,3 (default: 2,3,4)")
    replay.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="trials at once, which asha's decisions depend on (default 2)",
    )
    replay.add_argument("--out", default=None, help="output folder (default: <study>/replay)")
    replay.set_defaults(handler=_replay)


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
    _add_replay_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
