"""The driver's cost per trial and the report's time as a study grows: N very short trials on the CPU.

Each study is one experiment of N trials (random search over `loss.lambda_target`, one seed, one source model
of 2 iterations) of the small model at 64x32 that train 2 iterations and evaluate after each, one trial at a
time (`max_concurrent: 1`, so that nothing hides the overhead). Per study: the wall time of `msl-study run`,
the time until the first trial started (plan.json written to the first trial.json: Tune and its first
worker), the time from there to the last status.json, the trials' own training in it (the sum of each
trial's last `elapsed_s`: its training loop with its evaluations), the overhead per trial beyond that (Ray
scheduling, our runner, model and data set-up, checkpoints, status files), then the time of
`msl-study status` and of the whole report on the finished study. `--copies N` also times status and report
on the last study enlarged to N trials by copying its trial folders (new names and `lambda_target` values,
same metrics): the report's cost at a size whose run would take too long.

    python benchmarks/study_scale.py --work /tmp/study_scale --trials 50 200 --copies 500
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from msl.data.synth import generate
from study import layout
from study.report import build_report
from study.results import load_study
from study.status import format_status, study_status

EXPERIMENT = "scale"


def space(synth: Path, trials: int) -> dict:
    data = {"source_root": str(synth / "source"), "target_root": str(synth / "target")}
    return {
        "name": f"scale_{trials}",
        "config": {
            "stage": "source",
            "data": {
                **data,
                "source_size": [64, 32],
                "target_size": [64, 32],
                "batch_size": 2,
                "num_workers": 0,
            },
            "model": {"arch": "small_segnet"},
            "optim": {"lr": 0.01, "iterations": 2, "poly_horizon": None},
            "eval": {"every": 1, "validator_images": 2, "max_images": 2, "logged_images": 0},
            "runtime": {"threads": 1, "log_every": 1},
        },
        "source": {"set": {"optim.iterations": 2}},
        "metric": "target_im",
        "retries": 0,
        "seeds": [0],
        "experiments": {
            EXPERIMENT: {
                "variants": ["maxsquare"],
                "params": {"loss.lambda_target": {"uniform": [0.01, 1.0]}},
                "search": {"algorithm": "random", "num_samples": trials},
                "resources": {"cpu": 1},
                "max_concurrent": 1,
            }
        },
    }


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def run_study(work: Path, synth: Path, trials: int) -> dict:
    path = work / f"scale_{trials}.yaml"
    path.write_text(yaml.safe_dump(space(synth, trials), sort_keys=False))
    msl_study = Path(sys.executable).parent / "msl-study"
    started = time.perf_counter()
    with (work / f"scale_{trials}.log").open("w") as log:  # the driver's output, apart from the table
        command = [str(msl_study), "run", str(path), "--storage", str(work)]
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    total = time.perf_counter() - started
    study = work / f"scale_{trials}"
    exp = load_study(study).experiment(EXPERIMENT)
    assert len(exp.trials) == trials and (exp.trials["status"] == "finished").all(), exp.trials["status"]
    trial_dirs = list(layout.trials_dir(study, EXPERIMENT).iterdir())
    planned = (layout.experiment_dir(study, EXPERIMENT) / layout.PLAN_FILE).stat().st_mtime
    first = min((d / layout.TRIAL_FILE).stat().st_mtime for d in trial_dirs)  # its worker has started
    ended = max((d / layout.STATUS_FILE).stat().st_mtime for d in trial_dirs)
    own = exp.evals.groupby("trial_name")["elapsed_s"].max().sum()
    return {
        "trials": trials,
        "run_s": total,
        "startup_s": first - planned,
        "trials_s": ended - first,
        "own_s": own,
        "overhead_s": (ended - first - own) / trials,
        "status_s": timed(lambda: format_status(study_status(study))),
        "report_s": timed(build_report, study, work / f"report_{trials}"),
    }


def enlarge(study: Path, trials: int, out: Path) -> Path:
    """A copy of `study` (without Ray's state) with `trials` trials in its experiment, copies of its own."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(study, out, ignore=shutil.ignore_patterns("ray", "checkpoints", "tensorboard"))
    trial_dirs = layout.trials_dir(out, EXPERIMENT)
    originals, rng = sorted(trial_dirs.iterdir()), random.Random(0)
    for index in range(trials - len(originals)):
        copy = shutil.copytree(originals[index % len(originals)], trial_dirs / f"copy_{index:05d}")
        info = layout.read_json(copy / layout.TRIAL_FILE)
        info.update(trial_name=copy.name, params={"loss": {"lambda_target": rng.uniform(0.01, 1.0)}})
        layout.write_json(copy / layout.TRIAL_FILE, info)
    plan_file = layout.experiment_dir(out, EXPERIMENT) / layout.PLAN_FILE
    layout.write_json(plan_file, {**json.loads(plan_file.read_text()), "num_trials": trials})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the data and the studies")
    parser.add_argument("--trials", type=int, nargs="+", default=[50, 200])
    parser.add_argument(
        "--copies", type=int, default=None, help="also time the last study copied to N trials"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    synth = args.work / "synth"
    if not (synth / "synth.json").is_file():
        generate(synth, seed=0, scale="small", progress=False)
    print(
        "| trials | run s | to first trial s | trials s | own training s | overhead/trial s | status s "
        "| report s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for trials in args.trials:  # each row as soon as it is measured
        print_row(run_study(args.work, synth, trials))
    if args.copies:
        study = enlarge(
            args.work / f"scale_{args.trials[-1]}", args.copies, args.work / f"copies_{args.copies}"
        )
        print_row(
            {
                "trials": f"{args.copies} (copies)",
                "status_s": timed(lambda: format_status(study_status(study))),
                "report_s": timed(build_report, study, args.work / f"report_copies_{args.copies}"),
            }
        )


def print_row(row: dict) -> None:
    cells = [f"{row[key]:.0f}" if key in row else "–" for key in ("run_s", "startup_s", "trials_s", "own_s")]
    overhead = f"{row['overhead_s']:.2f}" if "overhead_s" in row else "–"
    print(
        f"| {row['trials']} | {' | '.join(cells)} | {overhead} | {row['status_s']:.2f} | "
        f"{row['report_s']:.1f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
