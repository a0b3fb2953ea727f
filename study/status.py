"""`msl-study status DIR`: where a study stands, read from its files while it runs or after its driver died.

Per experiment: trials by state, iterations done against those still to run with an ETA, the best checkpoint
so far under the experiment's own objective (plan "metric"/"mode": label-free unless the plan says oracle),
and the trials that errored or diverged with their reason. Above them: the driver (its heartbeat,
study.heartbeat: running, ended, or not running since when, with the line that resumes the study) and the
source models' iterations while they train. A trial without status.json is "running" while it keeps writing
and its driver runs; one whose driver is gone, or that is silent for longer than `quiet_limit`, is
"interrupted" (`msl-study resume DIR` continues it). Reads what `study.results.load_study` reads, so partly
written files are tolerated alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from msl.run_dir import RunDir
from study import layout
from study.decide import best_label
from study.heartbeat import Driver, read_driver
from study.results import ExperimentResults, load_study
from study.source_progress import SourceProgress, study_source_progress
from study.tables import message_line

INTERRUPTED = "interrupted"
STATES = (*layout.TRIAL_STATUSES, INTERRUPTED)
ENDED = ("finished", "stopped", *layout.FAILED_STATUSES)
QUIET_MIN_S = 600.0  # a running trial silent this long (and for QUIET_EVALUATIONS of its evaluations) ...
QUIET_EVALUATIONS = 3  # ... is taken for interrupted


@dataclass
class ExperimentStatus:
    """One experiment's state. `remaining` counts the iterations still to run if no trial is stopped early (an
    upper bound under a pruning scheduler); `eta_s` is that at the pace so far (None unless a trial runs)."""

    name: str
    metric: str
    mode: str
    oracle: bool
    choose_by: str | None  # what picks each variant's configuration when not the objective (plan choose_by)
    planned_trials: int
    max_iterations: int
    counts: dict[str, int]
    done: int  # trial-iterations run so far
    remaining: int
    elapsed_s: float  # from its start (plan.json written) to now, or to its last write when nothing runs
    active: bool  # some trial runs now
    eta_s: float | None
    best: dict | None  # {"value", "trial_name", "iteration", "variant", "config"} of the best checkpoint
    failed: list[dict] = field(default_factory=list)  # {"trial_name", "status", "iterations", "message"}
    running: list[dict] = field(default_factory=list)  # {"trial_name", "status", "iterations", "quiet_s"}


@dataclass
class StudyStatus:
    path: Path
    name: str
    created: str
    experiments: list[ExperimentStatus]
    not_started: list[str]  # experiments whose plan.json is not written yet
    driver: Driver | None = None  # None: a study without a heartbeat (an older msl)
    sources: SourceProgress | None = None


def study_status(path: str | Path, now: float | None = None) -> StudyStatus:
    """The status of the study in `path` at time `now` (default: the current time)."""
    now = time.time() if now is None else now
    results = load_study(layout.require_study(Path(path)))
    listed = results.study.get("experiments", [])
    driver = read_driver(results.path, now)
    stopped = driver is not None and driver.state != "running"
    return StudyStatus(
        path=results.path,
        name=results.study.get("name", results.path.name),
        created=results.study.get("created", "?"),
        experiments=[experiment_status(exp, now, stopped) for exp in results.experiments()],
        not_started=[name for name in listed if name not in results.plans],
        driver=driver,
        sources=study_source_progress(results.path),
    )


def experiment_status(exp: ExperimentResults, now: float, driver_stopped: bool = False) -> ExperimentStatus:
    """`driver_stopped`: the heartbeat says the driver is gone, so no trial without status.json runs (else a
    trial silent for longer than its `quiet_limits` is taken for interrupted)."""
    plan, trials = exp.plan, exp.trials.copy()
    metric = plan.metric
    mode = exp.mode
    max_iterations = int(plan.max_iterations)
    planned = exp.planned_runs  # a trial of several seeds has a row per seed
    trials["quiet_s"] = [now - last_write(exp, name) for name in trials["trial_name"]]
    limits = quiet_limits(exp)
    trials["status"] = [
        INTERRUPTED
        if status == "running" and (driver_stopped or quiet > limits.get(name, QUIET_MIN_S))
        else status
        for name, status, quiet in zip(trials["trial_name"], trials["status"], trials["quiet_s"], strict=True)
    ]
    counts = trials["status"].value_counts()
    unended = trials[~trials["status"].isin(ENDED)]
    done = int(trials["iterations"].sum())
    remaining = int((max_iterations - unended["iterations"]).clip(lower=0).sum())
    remaining += max(planned - len(trials), 0) * max_iterations
    plan_file = layout.plan_file(exp.study_path, exp.name)
    running = counts.get("running", 0) > 0
    end = now if running or trials.empty else now - trials["quiet_s"].min()  # else: its last write
    elapsed = end - plan_file.stat().st_mtime
    eta = None
    if running and done > 0 and elapsed > 0:
        eta = remaining * elapsed / done
    failed = trials[trials["status"].isin(layout.FAILED_STATUSES)]
    return ExperimentStatus(
        name=exp.name,
        metric=metric,
        mode=mode,
        oracle=plan.oracle,
        choose_by=plan.choose_by,
        planned_trials=planned,
        max_iterations=max_iterations,
        counts={state: int(counts.get(state, 0)) for state in STATES},
        done=done,
        remaining=remaining,
        elapsed_s=elapsed,
        active=running,
        eta_s=eta,
        best=_best(exp, metric, mode),
        failed=[
            {
                "trial_name": row.trial_name,
                "status": row.status,
                "iterations": int(row.iterations),
                "message": message_line(row.error if isinstance(row.error, str) else row.reason),
            }
            for row in failed.itertuples()
        ],
        running=[
            {
                "trial_name": row.trial_name,
                "status": row.status,
                "iterations": int(row.iterations),
                "quiet_s": row.quiet_s,
            }
            for row in unended.itertuples()
        ],
    )


def last_write(exp: ExperimentResults, trial_name: str) -> float:
    """When the trial last wrote anything we know of: trial.json, its metrics or its last checkpoint."""
    run = RunDir(layout.row_run_dir(exp.study_path, exp.name, trial_name))
    directory = run.path.parent
    latest = max(_mtime(path) for path in (directory / layout.TRIAL_FILE, run.metrics, run.last))
    return latest if latest > -math.inf else _mtime(directory)  # a trial still writing its trial.json


def _mtime(path: Path) -> float:
    """A file's modification time; -inf for one that is not there (not yet, or just replaced)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return -math.inf


def quiet_limits(exp: ExperimentResults) -> pd.Series:
    """Per trial, how long it may stay silent while running: QUIET_MIN_S, or QUIET_EVALUATIONS of its own
    evaluation intervals (from the `elapsed_s` of its records) when that is longer."""
    if "elapsed_s" not in exp.evals:  # nothing evaluated yet
        return pd.Series(dtype=float)
    elapsed = pd.to_numeric(exp.evals["elapsed_s"], errors="coerce").groupby(exp.evals["trial_name"])
    pace = (elapsed.max() / elapsed.count()).fillna(0.0)
    return (QUIET_EVALUATIONS * pace).clip(lower=QUIET_MIN_S)


def _best(exp: ExperimentResults, metric: str, mode: str) -> dict | None:
    usable = exp.trials.loc[~exp.trials["status"].isin(layout.FAILED_STATUSES), "trial_name"]
    evals = exp.evals[exp.evals["trial_name"].isin(usable)]
    label = best_label(evals[metric], mode) if metric in evals else None
    if label is None:
        return None
    row = evals.loc[label]
    return {
        "value": float(row[metric]),
        "trial_name": row["trial_name"],
        "iteration": int(row["iteration"]),
        "variant": row["variant"],
        "config": row["config"],
    }


# --- text ---------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """A duration as people read it: 45 s, 12.5 min, 3.2 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def format_status(status: StudyStatus) -> str:
    lines = [f"study {status.name} ({status.path}), created {status.created}"]
    if status.driver is not None:
        lines.append(_driver_line(status))
    if status.sources is not None:
        lines.append(status.sources.line())
    for exp in status.experiments:
        lines.extend(_experiment_lines(exp, status.path))
    waiting = status.sources is not None and status.sources.complete < status.sources.models
    for name in status.not_started:
        lines.append(
            f"experiment {name}: not started" + (" (the source models train first)" if waiting else "")
        )
    return "\n".join(lines)


def _driver_line(status: StudyStatus) -> str:
    driver, at = status.driver, f"{datetime.fromtimestamp(status.driver.since):%H:%M}"
    unfinished = status.not_started or any(exp.running or exp.remaining for exp in status.experiments)
    resume = f"; resume with `msl-study resume {status.path}`" if unfinished else ""
    if driver.state == "running":
        return f"driver: running since {at} (pid {driver.pid} on {driver.hostname})"
    if driver.state == "dead":
        return f"driver: not running since {at} (pid {driver.pid} on {driver.hostname}){resume}"
    return f"driver: ended at {at}{resume}"


def _experiment_lines(exp: ExperimentStatus, path: Path) -> list[str]:
    kind = "oracle" if exp.oracle else "label-free"
    counts = ", ".join(f"{n} {state}" for state, n in exp.counts.items() if n)
    started = sum(exp.counts.values())
    lines = [
        f"experiment {exp.name}: objective {exp.metric} ({exp.mode}, {kind})"
        + (f"; configurations chosen by {exp.choose_by} when it ends" if exp.choose_by else ""),
        f"  trials: {exp.planned_trials} planned, {started} started: {counts or 'none yet'}",
    ]
    total = exp.done + exp.remaining
    share = f" ({100 * exp.done / total:.0f}%)" if total else ""
    eta = f", ETA {duration(exp.eta_s)} at this pace" if exp.eta_s is not None else ""
    span = "since it started" if exp.active else "from its start to its last write"
    lines.append(
        f"  trial-iterations: {exp.done} done{share}, at most {exp.remaining} to go; "
        f"{duration(exp.elapsed_s)} {span}{eta}"
    )
    if exp.best is None:
        lines.append(f"  best {exp.metric} so far: none reported yet")
    else:
        best = exp.best
        lines.append(
            f"  best {exp.metric} so far: {best['value']:.4f} by {best['trial_name']} at iteration "
            f"{best['iteration']} (variant {best['variant']}, {best['config']})"
        )
    for trial in exp.running:
        quiet = duration(trial["quiet_s"])
        note = (
            f"no write for {quiet}: its driver stopped? `msl-study resume {path}` continues it"
            if trial["status"] == INTERRUPTED
            else f"last write {quiet} ago"
        )
        lines.append(
            f"  {trial['status']}: {trial['trial_name']} at iteration {trial['iterations']} of "
            f"{exp.max_iterations}, {note}"
        )
    for trial in exp.failed:
        lines.append(
            f"  {trial['status']}: {trial['trial_name']} at iteration {trial['iterations']}: "
            f"{trial['message']}"
        )
    return lines
