"""The `msl` command: data preparation, training and evaluation. Heavy modules load only for the command run."""

from __future__ import annotations

import argparse
import sys


def _data_synth(args: argparse.Namespace) -> int:
    from msl.data.synth import main_synth

    return main_synth(args)


def _data_verify(args: argparse.Namespace) -> int:
    from msl.data import main_verify

    return main_verify(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="generate the synthetic benchmark or check a dataset on disk")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    synth = data_commands.add_parser("synth", help="generate the embedded synthetic UDA benchmark")
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--scale", choices=("small", "default"), default="default")
    synth.add_argument("--shift", type=float, default=0.5, help="domain shift strength in [0, 1]")
    synth.set_defaults(handler=_data_synth)

    verify = data_commands.add_parser("verify", help="check a dataset tree: files, sizes, label ids, histogram")
    verify.add_argument("--dataset", required=True, choices=("gta5", "synthia", "cityscapes", "crosscity"))
    verify.add_argument("--root", required=True)
    verify.add_argument("--split", default=None, help="one split (default: every split found)")
    verify.add_argument("--num-classes", dest="num_classes", type=int, choices=(19, 16, 13), default=19)
    verify.add_argument("--city", default=None, help="NTHU CrossCity city")
    verify.set_defaults(handler=_data_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
