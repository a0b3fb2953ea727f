"""What a pruning scheduler would have saved and lost on an experiment whose trials all ran to the end.

`msl-study replay STUDY --experiment E`: Ray's own scheduler classes (ASHAScheduler; `study.schedulers`'
HyperBand and successive halving) are driven over the recorded evaluations as Tune drives them: trials start
in the order Tune created them, `concurrency` at once, every iteration takes the same time, and the scheduler
sees each evaluation when it happens, pausing, resuming and stopping trials through a stand-in for Tune's
controller. A trial's evaluations do not depend on whether other trials were stopped, so each setting's row
says what a study with that scheduler would have spent and picked without running it. The synchronous
schedulers decide on the values at their rungs only, so their replay equals a real run whatever the timing;
asynchronous ASHA's decisions depend on the order in which results arrive. "top_k" is the baseline that keeps
the best ceil(n / reduction) trials after the first rung and runs them to the end.

The pick is the report's (`study.decide.select`: per trial the best checkpoint by the label-free objective,
then the best configuration); the target mIoU it lost is shown for the audit only, never used to choose.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from study.decide import select
from study.results import ExperimentResults, config_label, param_column
from study.space import (
    AshaScheduler,
    HyperBandScheduler,
    SuccessiveHalvingScheduler,
    rungs,
)
from study.tables import markdown_table

SCHEDULERS = ("asha", "hyperband", "successive_halving", "top_k")
SPECS = {
    "asha": AshaScheduler,
    "hyperband": HyperBandScheduler,
    "successive_halving": SuccessiveHalvingScheduler,
}
TARGET = "oracle_miou"
COUNTER = re.compile(r"_[0-9a-f]{5}_(\d{5,})$")  # the end of a trial name whose id Tune's generator made


class ReplayError(ValueError):
    """An experiment or a setting that cannot be replayed; the message says why and what to do."""


@dataclass(frozen=True)
class Setting:
    scheduler: str
    grace: int
    reduction: int


def check_replayable(exp: ExperimentResults) -> None:
    """ReplayError unless every trial of the experiment ran one seed of one variant to the horizon."""
    if exp.plan.seeds_per_sample > 1:
        raise ReplayError(
            f"experiment {exp.name!r} runs several seeds per trial (seeds_per_sample); replay reads "
            "one run per trial"
        )
    variants = sorted(set(exp.trials["variant"]))
    if len(variants) > 1:
        raise ReplayError(
            f"experiment {exp.name!r} has trials of {len(variants)} variants ({', '.join(variants)}); replay "
            "compares the configuration one variant's search picks"
        )
    horizon = exp.plan.max_iterations
    short = exp.trials[(exp.trials["iterations"] < horizon) | (exp.trials["status"] != "finished")]
    if exp.trials.empty or not short.empty:
        named = ", ".join(f"{t.trial_name} ({t.status} at {t.iterations})" for t in short.itertuples())
        raise ReplayError(
            f"experiment {exp.name!r} has trials that did not run to iteration {horizon}: "
            f"{named or 'it has no trials'}; replay needs an experiment whose trials all ran to the end "
            "(scheduler fifo)"
        )


def check_setting(exp: ExperimentResults, setting: Setting) -> None:
    """ReplayError for an unknown scheduler, a reduction factor below 2, or a rung at which some trial did
    not evaluate."""
    if setting.scheduler not in SCHEDULERS:
        raise ReplayError(
            f"--scheduler: unknown scheduler {setting.scheduler!r}; choose from {', '.join(SCHEDULERS)}"
        )
    if setting.grace < 1 or setting.reduction < 2:
        raise ReplayError(
            f"--grace {setting.grace} --reduction {setting.reduction}: the grace period must be >= 1 and "
            "the reduction factor a whole number >= 2"
        )
    horizon = exp.plan.max_iterations
    if setting.grace >= horizon:
        raise ReplayError(
            f"--grace {setting.grace}: the grace period must be below the {horizon} iterations of a full "
            "trial"
        )
    evaluated = set.intersection(*(set(e["iteration"]) for _, e in exp.evals.groupby("trial_name")))
    for rung in _rungs(exp, setting):
        if rung not in evaluated:
            raise ReplayError(
                f"--grace {setting.grace} --reduction {setting.reduction}: the rung at iteration {rung} is "
                f"not an evaluation iteration of experiment {exp.name!r} (every trial evaluated at "
                f"{', '.join(map(str, sorted(evaluated)))}); choose a grace period and reduction factor "
                "whose rungs are among them"
            )


def _rungs(exp: ExperimentResults, setting: Setting) -> list[int]:
    spec = SimpleNamespace(grace_period=setting.grace, reduction_factor=setting.reduction)
    return rungs(spec, exp.plan.max_iterations)


def trial_order(exp: ExperimentResults) -> list[str]:
    """Trial names in the order Tune created them: by the counter that ends the ids of the trials Tune's
    variant generator makes (grid and random search, `<5 hex>_<counter>`), else (a searcher's own ids, e.g.
    Optuna's) by the time each trial started (its first evaluation's time less the seconds it had run)."""
    names = list(exp.trials["trial_name"])
    counters = [COUNTER.search(name) for name in names]
    if all(counters):
        return [name for _, name in sorted(zip((int(c.group(1)) for c in counters), names, strict=True))]
    started = (exp.evals["wall_time"] - exp.evals["elapsed_s"]).groupby(exp.evals["trial_name"]).min()
    return sorted(names, key=lambda name: started.get(name, math.inf))


def _ray_scheduler(exp: ExperimentResults, setting: Setting):
    from ray.tune.schedulers import ASHAScheduler

    from study.schedulers import synchronous_scheduler

    horizon = exp.plan.max_iterations
    if setting.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="iteration",
            max_t=horizon,
            grace_period=setting.grace,
            reduction_factor=setting.reduction,
        )
    else:
        spec = SPECS[setting.scheduler](grace_period=setting.grace, reduction_factor=setting.reduction)
        scheduler = synchronous_scheduler(spec, horizon, len(exp.trials))
    scheduler.set_search_properties(exp.plan.metric, exp.mode)
    return scheduler


class _Trial:
    """What Ray's schedulers read of a Tune trial, and its recorded evaluations."""

    def __init__(self, trial_id: str, records: list[dict]):
        self.trial_id, self.records = trial_id, records
        self.status, self.is_saving, self.done = "PENDING", False, 0  # evaluations it has reported

    def __repr__(self) -> str:
        return self.trial_id


class _Controller:
    """The part of Tune's controller that schedulers call back, with its semantics (`stop_trial`)."""

    def __init__(self, scheduler, trials: list[_Trial]):
        self.scheduler, self.trials = scheduler, trials

    def get_trials(self) -> list[_Trial]:
        return self.trials

    def stop_trial(self, trial: _Trial) -> None:
        if trial.status in ("PENDING", "PAUSED"):
            self.scheduler.on_trial_remove(self, trial)
        elif trial.status == "RUNNING":
            self.scheduler.on_trial_complete(self, trial, trial.records[trial.done - 1])
        trial.status = "TERMINATED"


def drive(scheduler, curves: dict[str, list[dict]], concurrency: int) -> dict[str, int]:
    """Iterations each trial runs under a Ray scheduler; `curves`: each trial's evaluation records in the
    order Tune created the trials."""
    from ray.tune.schedulers import TrialScheduler

    trials = [_Trial(name, records) for name, records in curves.items()]
    controller = _Controller(scheduler, trials)
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    events: list = []
    ties = itertools.count()  # ties in time go to the trial scheduled first

    def schedule(trial: _Trial, now: int) -> None:
        trial.status = "RUNNING"
        reached = trial.records[trial.done - 1]["iteration"] if trial.done else 0
        heapq.heappush(events, (now + trial.records[trial.done]["iteration"] - reached, next(ties), trial))

    def fill(now: int) -> None:
        while sum(t.status == "RUNNING" for t in trials) < concurrency:
            trial = scheduler.choose_trial_to_run(controller)
            if trial is None:
                return
            schedule(trial, now)

    fill(0)
    while events:
        now, _, trial = heapq.heappop(events)
        record = trial.records[trial.done]
        trial.done += 1
        decision = scheduler.on_trial_result(controller, trial, record)
        if decision == TrialScheduler.PAUSE:
            trial.status = "PAUSED"
        elif decision == TrialScheduler.STOP or trial.done == len(trial.records):
            controller.stop_trial(trial)
        else:
            schedule(trial, now)
        fill(now)
    return {t.trial_id: t.records[t.done - 1]["iteration"] if t.done else 0 for t in trials}


def top_k(exp: ExperimentResults, setting: Setting) -> dict[str, int]:
    """The best ceil(n / reduction) trials at the first rung run to the end; the others stop there."""
    horizon, grace = exp.plan.max_iterations, setting.grace
    at = exp.evals[exp.evals["iteration"] == grace].set_index("trial_name")[exp.plan.metric]
    keep = math.ceil(len(at) / setting.reduction)
    kept = set(at.sort_values(ascending=exp.mode == "min", kind="stable").index[:keep])
    return {name: horizon if name in kept else grace for name in trial_order(exp)}


def reached(exp: ExperimentResults, setting: Setting, concurrency: int) -> dict[str, int]:
    """Iterations each trial would have run under the setting."""
    check_setting(exp, setting)
    if setting.scheduler == "top_k":
        return top_k(exp, setting)
    metric = exp.plan.metric
    by_trial = {name: evals.sort_values("iteration") for name, evals in exp.evals.groupby("trial_name")}
    curves = {name: by_trial[name][["iteration", metric]].to_dict("records") for name in trial_order(exp)}
    return drive(_ray_scheduler(exp, setting), curves, concurrency)


def pick(exp: ExperimentResults, iterations: dict[str, int]) -> dict:
    """What the report selects from the evaluations each trial reached: its trial, configuration,
    objective, target mIoU (%) and the trial-iterations used."""
    evals = exp.evals[exp.evals["iteration"] <= exp.evals["trial_name"].map(iterations)]
    selection = select(dataclasses.replace(exp, evals=evals))
    chosen = selection.chosen_picks(next(iter(exp.plan.variants))).iloc[0]
    row = evals.loc[int(chosen["selected_row"])]
    params = exp.trials.set_index("trial_name").loc[
        chosen["trial_name"], list(map(param_column, exp.searched))
    ]
    return {
        "trial": chosen["trial_name"],
        "pick": config_label(dict(zip(exp.searched, params, strict=True))),
        "objective": float(row[exp.plan.metric]),
        "target": 100 * float(row[TARGET]),
        "used": sum(iterations.values()),
    }


def replay_table(exp: ExperimentResults, settings: list[Setting], concurrency: int) -> pd.DataFrame:
    """One row for the full run, then one per setting: trial-iterations used (and % of the full run), whether
    the full run's pick ran to the end, the pick, the objective lost (> 0: worse) and the target mIoU lost
    (percentage points; the audit)."""
    check_replayable(exp)
    horizon = exp.plan.max_iterations
    full = pick(exp, dict.fromkeys(trial_order(exp), horizon))
    worse = 1 if exp.mode == "max" else -1
    rows = [["full run", None, None, full["used"], 100.0, True, full["pick"], 0.0, 0.0]]
    for setting in settings:
        iterations = reached(exp, setting, concurrency)
        result = pick(exp, iterations)
        rows.append(
            [
                setting.scheduler,
                setting.grace,
                setting.reduction,
                result["used"],
                100 * result["used"] / full["used"],
                iterations[full["trial"]] == horizon,
                result["pick"],
                worse * (full["objective"] - result["objective"]),
                full["target"] - result["target"],
            ]
        )
    columns = [
        "scheduler",
        "grace",
        "reduction",
        "trial-iterations",
        "% of full",
        "full pick kept",
        "pick",
        f"{exp.plan.metric} lost",
        "target mIoU lost (audit)",
    ]
    return pd.DataFrame(rows, columns=columns).astype({"grace": "Int64", "reduction": "Int64"})


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The table's cells as the markdown shows them."""
    cells = table.astype(object).copy()
    cells["% of full"] = table["% of full"].map("{:.0f}%".format)
    cells["full pick kept"] = table["full pick kept"].map({True: "yes", False: "no"})
    for column in table.columns[-2:]:
        cells[column] = table[column].map(lambda value: "0" if value == 0 else f"{value:+.3g}")
    return cells.fillna("–")


def write_replay(exp: ExperimentResults, table: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """The table as `<out_dir>/<experiment>.md` and `.csv`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, csv = out_dir / f"{exp.name}.md", out_dir / f"{exp.name}.csv"
    table.to_csv(csv, index=False)
    markdown.write_text(
        f"# Replay of experiment {exp.name!r}: {len(exp.trials)} trials of {exp.plan.max_iterations} "
        f"iterations, objective {exp.plan.metric} ({exp.mode})\n\n{markdown_table(shown(table))}\n"
    )
    return markdown, csv
