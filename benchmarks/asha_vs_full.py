"""What pruning schedulers save on the quickstart sweep, and what they lose, against running every trial to
the end (issue 21 point 3).

Runs the `sweep` experiment of search_spaces/quickstart.yaml once with every sampled configuration trained to
the end (FIFO), evaluated every `--every` iterations, with random search (so that the configurations do not
depend on the scheduler's decisions), and once for real with the scheduler `--real` (default: the
quickstart's own ASHA). Then `msl-study replay`'s code (study/replay.py) replays Ray's own schedulers (ASHA,
HyperBand, synchronous successive halving) and the top-k baseline over the full run's evaluations for a grid
of grace periods and reduction factors, for the first 4, 8 and `--samples` configurations: trial-iterations
used as a share of the full run, whether the full run's pick reached the end, the configuration the
label-free objective picks (the report's rule), the objective and the target mIoU (reported, never used to
choose) it lost. The real run is checked against the replay of its own setting (same configurations stopped
at the same iterations), and its cost and pick are set against the full run's.

    MSL_SYNTH=data/synth python benchmarks/asha_vs_full.py --work /tmp/asha_vs_full \\
        --real successive_halving:10:3 --out results/benchmarks/asha_vs_full.md
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from synth_runs import Report, machine

from study.replay import (
    SCHEDULERS,
    ReplayError,
    Setting,
    check_setting,
    pick,
    reached,
    replay_table,
    shown,
    trial_order,
)
from study.results import config_label, load_study, param_column
from study.tables import markdown_table

ROOT = Path(__file__).resolve().parent.parent
GRACE = (10, 20, 30)
REDUCTION = (2, 3, 4)


def run_sweep(work: Path, name: str, samples: int, every: int, scheduler: dict) -> Path:
    """The quickstart's sweep with random search over `samples` configurations (resumed when it exists)."""
    study_dir = work / name
    msl_study = str(Path(sys.executable).parent / "msl-study")
    if (study_dir / "study.json").is_file():
        subprocess.run([msl_study, "resume", str(study_dir)], check=True)
        return study_dir
    space = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    space["base"] = str(ROOT / "msl" / "configs" / "synth.yaml")
    sweep = space["experiments"]["sweep"]
    sweep["set"] = {**sweep["set"], "eval.every": every}
    sweep["search"] = {"algorithm": "random", "num_samples": samples, "seed": 0}
    sweep["scheduler"] = scheduler
    if scheduler["name"] in ("hyperband", "successive_halving"):
        sweep.pop("max_concurrent", None)  # a synchronous bracket needs all its trials started
        space.pop("max_concurrent", None)
    space = {**space, "name": name, "experiments": {"sweep": sweep}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    subprocess.run([msl_study, "run", str(path), "--storage", str(work)], check=True)
    return study_dir


def load(study_dir: Path):
    """The sweep experiment's results."""
    return load_study(study_dir).experiment("sweep")


def stops(exp) -> dict[str, int]:
    """Iterations each configuration ran, by its label (the same random draws in both studies)."""
    return dict(
        zip(labels(exp), exp.trials.set_index("trial_name").loc[trial_order(exp), "iterations"], strict=True)
    )


def labels(exp) -> list[str]:
    """The configurations in sampling order."""
    trials = exp.trials.set_index("trial_name").loc[trial_order(exp)]
    columns = list(map(param_column, exp.searched))
    return [config_label(dict(zip(exp.searched, row, strict=True))) for row in trials[columns].to_numpy()]


def real_setting(text: str) -> dict:
    """`asha:30:2` -> the scheduler setting of the space."""
    name, grace, reduction = text.split(":")
    return {"name": name, "grace_period": int(grace), "reduction_factor": int(reduction)}


def check_real_run(full, real, setting: dict, concurrency: int, say) -> None:
    """Whether the real pruned run stopped each configuration where the replay over the full run does, and
    what it spent and picked against the full run (point 3 of issue 21: at most 1/3 of the trial-iterations,
    a pick within 0.5 target mIoU)."""
    replayed = reached(
        full, Setting(setting["name"], setting["grace_period"], setting["reduction_factor"]), concurrency
    )
    by_label = dict(zip(labels(full), (replayed[name] for name in trial_order(full)), strict=True))
    truth = stops(real)
    same = truth == by_label
    best = pick(full, dict.fromkeys(trial_order(full), full.plan.max_iterations))
    result = pick(real, real.trials.set_index("trial_name")["iterations"].to_dict())
    say(
        f"- real run with scheduler {setting}: {result['used']} trial-iterations "
        f"({result['used'] / best['used']:.0%} of the full run's {best['used']}); picked {result['pick']} "
        f"(target mIoU {result['target']:.1f}, full run's pick {best['pick']} {best['target']:.1f}: "
        f"{result['target'] - best['target']:+.1f})"
    )
    say(
        f"- check of the replay: the real run stopped the configurations at {sorted(truth.values())}, the "
        f"replay over the full run at {sorted(by_label.values())}: "
        + (
            "the same configurations at the same iterations"
            if same
            else "NOT the same"
            + (" (asha decides on arrival order)" if setting["name"] == "asha" else "")
            + ("" if set(truth) == set(by_label) else "; the two studies drew different configurations")
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the studies (reused when run)")
    parser.add_argument("--samples", type=int, default=16, help="configurations sampled (default 16)")
    parser.add_argument("--every", type=int, default=10, help="evaluate every N iterations (default 10)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once (the quickstart's 2)")
    parser.add_argument(
        "--real",
        type=real_setting,
        help="the scheduler of the real pruned run as NAME:GRACE:REDUCTION, e.g. successive_halving:10:3 "
        "(default: the quickstart sweep's own)",
    )
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    quickstart = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    setting = args.real or quickstart["experiments"]["sweep"]["scheduler"]
    full = load(run_sweep(args.work, "sweep_full", args.samples, args.every, {"name": "fifo"}))
    real = load(run_sweep(args.work, f"sweep_{setting['name']}", args.samples, args.every, setting))
    max_t = full.plan.max_iterations

    report = Report()
    say = report.say
    say("# Pruning schedulers against every trial to the end: the quickstart sweep")
    say()
    say(f"- machine: {machine()}; date: {pd.Timestamp.now():%Y-%m-%d}")
    say(f"- command: `{' '.join(['python', *sys.argv])}`")
    say(
        f"- the `sweep` experiment of search_spaces/quickstart.yaml (MaxSquare+IW, seed 0, {max_t} "
        f"iterations) with random search over {args.samples} configurations, evaluated every {args.every} "
        f"iterations; objective {full.plan.metric} ({full.plan.mode}), label-free; target mIoU "
        "reported, never used to choose; replays as `msl-study replay` makes them (study/replay.py), "
        f"{args.concurrency} trials at once"
    )
    check_real_run(full, real, setting, args.concurrency, say)
    order = trial_order(full)
    for count in sorted({4, 8, args.samples} & set(range(1, args.samples + 1))):
        names = order[:count]
        subset = dataclasses.replace(
            full,
            trials=full.trials[full.trials["trial_name"].isin(names)],
            evals=full.evals[full.evals["trial_name"].isin(names)],
        )
        settings = [
            Setting(*key)
            for key in itertools.product(SCHEDULERS, GRACE, REDUCTION)
            if _replayable(subset, Setting(*key))
        ]
        say()
        say(f"## The first {count} configurations")
        say()
        say(markdown_table(shown(replay_table(subset, settings, args.concurrency))))
    report.write(args.out)


def _replayable(exp, setting: Setting) -> bool:
    try:
        check_setting(exp, setting)
    except ReplayError:
        return False
    return True


if __name__ == "__main__":
    main()
