"""The error boundary of the `msl` and `msl-study` commands: an error reaches the user as one line,
`PROG: error: MESSAGE`, with exit status 2; the traceback only with `--debug` or MSL_DEBUG=1."""

from __future__ import annotations

import argparse
import os
import sys

DEBUG_VARIABLE = "MSL_DEBUG"
EXIT_ERROR = 2


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of an error (or set {DEBUG_VARIABLE}=1)",
    )


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse `argv` and run the chosen subcommand's handler inside the error boundary."""
    args = parser.parse_args(argv)
    if args.debug or os.environ.get(DEBUG_VARIABLE, "0") not in ("", "0"):
        return int(args.handler(args) or 0)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the boundary: every error becomes one line
        print(f"{parser.prog}: error: {describe(error)}", file=sys.stderr)
        return EXIT_ERROR


def describe(error: BaseException) -> str:
    """The message of an error for the user. Ray's task errors carry the worker's exception as `cause`. An
    error that is not about the user's input (not ours, not a ValueError or OSError) is named as a bug."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    message = str(error).strip() or type(error).__name__
    ours = type(error).__module__.split(".")[0] in ("msl", "study")
    if not ours and not isinstance(error, (ValueError, OSError)):
        message = (
            f"{type(error).__name__}: {message} (an internal error: rerun with --debug for the traceback "
            "and report it)"
        )
    return message
