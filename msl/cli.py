"""The `msl` command: data preparation, training and evaluation. Heavy modules load only for the command
run."""

from __future__ import annotations

import argparse
import sys

from msl.errors import add_debug_option, run_command


def _data_synth(args: argparse.Namespace) -> int:
    from msl.data.synth import main_synth

    return main_synth(args)


def _data_verify(args: argparse.Namespace) -> int:
    from msl.data import main_verify

    return main_verify(args)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from msl.config import ConfigError, check_data_roots, load_config
    from msl.run_dir import RunDir
    from msl.trainer import train

    cfg = load_config(args.config, args.set)
    try:
        check_data_roots(cfg)
    except ConfigError as error:
        raise ConfigError(f"{args.config}: {error}") from None
    out = Path(args.out or f"runs/{Path(args.config).stem}")
    run = RunDir(out)
    if args.resume:
        if not run.last.is_file():
            raise FileNotFoundError(
                f"nothing to resume: {run.last} does not exist (a run that never reached its first "
                "evaluation starts again without --resume)"
            )
        _check_same_config(_saved_config(run), cfg)
    record = train(cfg, out, resume_from=run.last if args.resume else None)
    shown = {k: round(v, 4) for k, v in record.items() if isinstance(v, float)}
    print(f"finished {cfg.optim.iterations} iterations in {out}: {shown}")
    return 0


def _saved_config(run):
    """The config a run was started with (its config.yaml); a missing, empty or unreadable file is named as
    the run's damage, not compared as if the run had been started with the defaults."""
    from msl.config import ConfigError, load_config, read_yaml

    try:
        raw = read_yaml(run.config)
        if not raw:
            raise ConfigError(f"{run.config}: the file is empty")
        return load_config(raw)
    except ConfigError as error:
        raise ConfigError(
            f"the run's config.yaml is empty or unreadable ({error}); its checkpoints are intact: put the "
            "run's own config back in that file, or start a new run with another --out"
        ) from None


def _check_same_config(saved_cfg, cfg) -> None:
    """A resumed run must continue the same experiment: only runtime settings (device, threads) may change.
    Both configs are loaded, so a key that a newer msl added (with its default) is no change."""
    from msl.config import ConfigError, config_to_dict

    saved, wanted = config_to_dict(saved_cfg), config_to_dict(cfg)
    for section, values in wanted.items():
        if section == "runtime" or not isinstance(values, dict):
            continue
        for key, value in values.items():
            if (section, key) != ("data", "normalization") and saved[section][key] != value:
                raise ConfigError(
                    f"--resume: {section}.{key} is {value!r} but the run was started with "
                    f"{saved[section][key]!r}; resume with the run's own config.yaml"
                )


def _eval(args: argparse.Namespace) -> int:
    from msl.evaluate_checkpoint import evaluate_checkpoint

    return evaluate_checkpoint(
        args.checkpoint,
        config=args.config,
        overrides=args.set,
        domain=args.domain,
        flip=args.flip,
        save_predictions=args.save_predictions,
    )


def build_parser() -> argparse.ArgumentParser:
    from msl.labels import DATASET_NAMES, NUM_CLASSES_CHOICES

    parser = argparse.ArgumentParser(prog="msl", description=__doc__)
    add_debug_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="generate the synthetic benchmark or check a dataset on disk")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    synth = data_commands.add_parser("synth", help="generate the embedded synthetic UDA benchmark")
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--scale", choices=("small", "default"), default="default")
    synth.add_argument("--shift", type=float, default=0.5, help="domain shift strength in [0, 1]")
    synth.set_defaults(handler=_data_synth)

    verify = data_commands.add_parser(
        "verify", help="check a dataset tree: files, sizes, label ids, histogram"
    )
    verify.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    verify.add_argument("--root", required=True)
    verify.add_argument("--split", default=None, help="one split (default: every split found)")
    verify.add_argument(
        "--num-classes", dest="num_classes", type=int, choices=NUM_CLASSES_CHOICES, default=19
    )
    verify.add_argument("--city", default=None, help="NTHU CrossCity city")
    verify.set_defaults(handler=_data_verify)

    train = commands.add_parser("train", help="train one model (stage source or uda) from a config file")
    train.add_argument("config", help="YAML run configuration (see msl/config.py for every key)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set loss.lambda_target=0.09 (repeatable)",
    )
    train.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on a labelled split")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--config", default=None, help="config file (default: the checkpoint's own config)")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    evaluate.add_argument(
        "--domain",
        choices=("target", "source"),
        default="target",
        help="evaluate on data.target_val_split (default) or data.source_val_split",
    )
    evaluate.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    evaluate.add_argument(
        "--save-predictions",
        dest="save_predictions",
        default=None,
        metavar="DIR",
        help="write predictions as Cityscapes labelIds PNGs and colour PNGs",
    )
    evaluate.set_defaults(handler=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
