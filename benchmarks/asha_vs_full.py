"""What ASHA saves on the quickstart sweep, and what it loses, against running every trial to the end.

Runs the `sweep` experiment of search_spaces/quickstart.yaml once with every sampled configuration trained to
the end (FIFO), evaluated every `--every` iterations, with random search (so that the configurations do not
depend on the scheduler's decisions). Then replays Ray's own ASHAScheduler over the recorded evaluations for
a grid of grace periods and reduction factors: `--concurrency` trials run at once and start in sampling
order, every iteration takes the same time, and the scheduler sees each evaluation when it happens. A trial's
evaluations do not depend on whether other trials are stopped, so the replay gives what a study with that
scheduler would have spent and picked, without running it (the benchmark also runs the quickstart's own ASHA
setting for real once and says whether it stopped the same trials as the replay).

For each setting and each number of samples (the first 4, 8, ... configurations), it prints: trial-iterations
used as a share of the full run, whether the full run's pick reached the end, the configuration the
label-free objective picks (study.decide's rule: a trial's best checkpoint), and that pick's target mIoU
(reported, never used to choose) against the full run's pick.

    MSL_SYNTH=data/synth python benchmarks/asha_vs_full.py --work /tmp/asha_vs_full \\
        --out results/benchmarks/asha_vs_full.md
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import yaml
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from synth_runs import Report, machine

from study.decide import TARGET, select
from study.results import ExperimentResults, config_label, load_study, param_column

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
    space = {**space, "name": name, "experiments": {"sweep": sweep}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    subprocess.run([msl_study, "run", str(path), "--storage", str(work)], check=True)
    return study_dir


def load(study_dir: Path):
    """The experiment's results with trials in the order they started (their first evaluation's time less the
    seconds it had run)."""
    exp = load_study(study_dir).experiment("sweep")
    started = (exp.evals["wall_time"] - exp.evals["elapsed_s"]).groupby(exp.evals["trial_name"]).min()
    order = exp.trials["trial_name"].map(started)
    exp.trials = (
        exp.trials.assign(order=order).sort_values("order").drop(columns="order").reset_index(drop=True)
    )
    return exp


def replay(exp, grace: int, rf: int, concurrency: int) -> dict[str, int]:
    """Iterations each trial would run under Ray's ASHAScheduler (in a simulated clock, see the docstring)."""
    max_t, metric, mode = exp.plan.max_iterations, exp.plan.metric, exp.plan.mode
    scheduler = ASHAScheduler(time_attr="iteration", max_t=max_t, grace_period=grace, reduction_factor=rf)
    scheduler.set_search_properties(metric, mode)
    curves = {
        name: evals.sort_values("iteration")[["iteration", metric]].to_dict("records")
        for name, evals in exp.evals.groupby("trial_name")
    }
    waiting, events, reached, started = list(exp.trials["trial_name"]), [], {}, itertools.count()

    def start(now: int) -> None:
        order = next(started)  # ties in time go to the trial started first
        name = waiting.pop(0)
        trial = SimpleNamespace(trial_id=name)
        scheduler.on_trial_add(None, trial)
        for index, record in enumerate(curves[name]):  # each evaluation happens `iteration` after the start
            heapq.heappush(events, (now + record["iteration"], order, index, trial))

    for _ in range(min(concurrency, len(waiting))):
        start(0)
    stopped = set()
    while events:
        now, _, index, trial = heapq.heappop(events)
        if trial.trial_id in stopped:
            continue
        record = curves[trial.trial_id][index]
        reached[trial.trial_id] = record["iteration"]
        last = index == len(curves[trial.trial_id]) - 1
        if last:
            scheduler.on_trial_complete(None, trial, record)
        elif scheduler.on_trial_result(None, trial, record) == TrialScheduler.STOP:
            stopped.add(trial.trial_id)
            scheduler.on_trial_remove(None, trial)
        if (last or trial.trial_id in stopped) and waiting:
            start(now)
    return reached


def halving(exp, grace: int, rf: int) -> dict[str, int]:
    """Iterations each trial would run under synchronous successive halving: every trial to `grace`, then at
    each rung (grace x rf^k) the best 1/rf of those there (by the objective at the rung) go on."""
    max_t, metric, mode = exp.plan.max_iterations, exp.plan.metric, exp.plan.mode
    at = exp.evals.pivot_table(index="trial_name", columns="iteration", values=metric)
    alive, rung = list(exp.trials["trial_name"]), grace
    reached = {}
    while rung < max_t and len(alive) > 1:
        keep = max(1, math.ceil(len(alive) / rf))
        ranked = at.loc[alive, rung].sort_values(ascending=mode == "min", kind="stable").index[:keep]
        reached |= {name: rung for name in alive if name not in ranked}
        alive, rung = list(ranked), rung * rf
    return reached | dict.fromkeys(alive, max_t)


def pick(exp, reached: dict[str, int]) -> dict:
    """What the report would select from the evaluations each trial reached."""
    trials = exp.trials[exp.trials["trial_name"].isin(list(reached))]
    evals = exp.evals[exp.evals["iteration"] <= exp.evals["trial_name"].map(reached)]
    selection = select(ExperimentResults(exp.name, exp.plan, trials, evals))
    chosen = selection.chosen_picks(next(iter(exp.plan.variants))).iloc[0]
    params = trials.set_index("trial_name").loc[chosen["trial_name"], list(map(param_column, exp.searched))]
    return {
        "trial": chosen["trial_name"],
        "pick": config_label(dict(zip(exp.searched, params, strict=True))),
        "target": 100 * evals.at[int(chosen["selected_row"]), TARGET],
        "used": sum(reached.values()),
    }


def labels(exp) -> list[str]:
    """The configurations in sampling order."""
    columns = list(map(param_column, exp.searched))
    return [config_label(dict(zip(exp.searched, row, strict=True))) for row in exp.trials[columns].to_numpy()]


def yes(value: bool) -> str:
    return "yes" if value else "no"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the studies (reused when run)")
    parser.add_argument("--samples", type=int, default=16, help="configurations sampled (default 16)")
    parser.add_argument("--every", type=int, default=10, help="evaluate every N iterations (default 10)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once (the quickstart's 2)")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    quickstart = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    own = quickstart["experiments"]["sweep"]["scheduler"]
    full = load(run_sweep(args.work, "sweep_full", args.samples, args.every, {"name": "fifo"}))
    real = load(run_sweep(args.work, "sweep_asha", args.samples, args.every, own))
    max_t = full.plan.max_iterations

    report = Report()
    say = report.say
    say("# ASHA against every trial to the end: the quickstart sweep")
    say()
    say(f"- machine: {machine()}; date: {pd.Timestamp.now():%Y-%m-%d}")
    say(f"- command: `{' '.join(['python', *sys.argv])}`")
    say(
        f"- the `sweep` experiment of search_spaces/quickstart.yaml (MaxSquare+IW, seed 0, {max_t} "
        "iterations) "
        f"with random search over {args.samples} configurations, evaluated every {args.every} iterations; "
        f"objective {full.plan.metric} ({full.plan.mode}), label-free; target mIoU reported, never "
        "used "
        "to choose"
    )
    truth = real.trials.set_index("trial_name")["iterations"].to_dict()
    same_samples = labels(real) == labels(full)
    replayed = replay(real, own["grace_period"], own["reduction_factor"], args.concurrency)
    say(
        f"- check of the replay: a real run with the quickstart's setting (grace {own['grace_period']}, "
        f"reduction {own['reduction_factor']}) stopped trials at {sorted(truth.values())}; the replay of its "
        f"evaluations at {sorted(replayed.values())}: "
        f"{'the same trials' if truth == replayed else 'NOT the same (Ray decides on arrival order)'}"
        f"{'' if same_samples else ' (its samples differ from the full run)'}"
    )
    say()
    say(
        "| samples | scheduler | grace | reduction | trial-iterations | full run's pick ran to the end | "
        "same pick "
        "| picked | target mIoU % | vs full |"
    )
    say("|---|---|---|---|---|---|---|---|---|---|")
    counts = sorted({4, 8, args.samples} & set(range(1, args.samples + 1)))
    for count in counts:
        subset = ExperimentResults(
            full.name,
            full.plan,
            full.trials.iloc[:count],
            full.evals[full.evals["trial_name"].isin(full.trials["trial_name"].iloc[:count])],
        )
        best = pick(subset, {name: max_t for name in subset.trials["trial_name"]})
        say(
            f"| {count} | – | – | {best['used']} (100%) | – | – | {best['pick']} | {best['target']:.1f} | – |"
        )
        for kind, grace, rf in itertools.product(("ASHA", "sync SH"), GRACE, REDUCTION):
            if kind == "ASHA":
                reached = replay(subset, grace, rf, args.concurrency)
            else:
                reached = halving(subset, grace, rf)
            result = pick(subset, reached)
            say(
                f"| {count} | {kind} | {grace} | {rf} | {result['used']} "
                f"({result['used'] / best['used']:.0%}) "
                f"| {yes(reached[best['trial']] == max_t)} | {yes(result['trial'] == best['trial'])} | "
                f"{result['pick']} | {result['target']:.1f} | {result['target'] - best['target']:+.1f} |"
            )
    report.write(args.out)


if __name__ == "__main__":
    main()
