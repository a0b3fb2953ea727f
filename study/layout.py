"""Where a study keeps what: the contract between the runner (which writes) and the report (which reads).

    STUDY/
      space.yaml                      the space file as given
      study.json                      {"name", "created", "git_revision", "versions", "experiments": [names]}
      driver.json                     the driver's heartbeat (study.heartbeat): {"state", "pid", "hostname",
                                      "started", "time"}, rewritten every few seconds while it runs
      sources/<key>/                  one msl run directory per source model (stage source), reused by key
      <experiment>/
        plan.json                     the resolved experiment (see below)
        ray/                          Ray Tune's own experiment state (restore, resume)
        optuna.journal                the Optuna study of an Optuna search (optuna-dashboard,
        optuna.load_study) trials/<trial_name>/
          trial.json                  {"trial_name", "experiment", "variant", "seed", "params", "overrides",
                                       "source_run", "node_id" (the Ray node that runs the trial)}; a trial
                                       of several seeds (seeds_per_sample) has "seeds": [...] and
                                       "source_runs": {seed: run} instead
          status.json                 {"status", "iterations", "error", "reason"}, written when the trial ends
          run/                        the trial's msl run directory (msl.run_dir; its validator_probs/ are
                                      read by study.selection); run_s<seed>/ for each of several seeds

plan.json holds: "experiment", "metric", "mode", "oracle" (whether the objective reads target test labels),
"variants" ({name: overrides}), "seeds", "searched" ({dotted key: distribution spec, or {"grid per variant":
{variant: values}} for a variant's own grid}), "scheduler", "search", "num_samples", "num_trials",
"seeds_per_sample", "max_iterations", "eval_every", "benchmark" (a key of paper_results.yaml or null),
"num_classes", "class_names", "confirm" (null, or for a confirmation {"from": the tuning experiment,
"selected": {variant: {dotted key: value}}}, the configurations it runs).

A trial's status is "finished" (ran every iteration), "stopped" (stopped early by the scheduler: `reason` says
why), "error" (`error` holds the message), "diverged" (a loss term or the objective became NaN or infinite:
`error` says which) or, while no status.json exists yet, "running". What a run records per evaluation:
msl.run_dir.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from msl.io import write_text_atomic

SPACE_FILE = "space.yaml"
STUDY_FILE = "study.json"
DRIVER_FILE = "driver.json"
PLAN_FILE = "plan.json"
TRIAL_FILE = "trial.json"
STATUS_FILE = "status.json"
RUN_DIR = "run"
SEED_MARK = "@s"  # Ray's trial names never hold "@"
OPTUNA_JOURNAL = "optuna.journal"
TRIAL_STATUSES = ("finished", "stopped", "error", "diverged", "running")
FAILED_STATUSES = ("error", "diverged")  # trials without a usable result: left out of picks, listed
# Study, experiment and variant names become folder names: letters, digits, `_`, `-`, `.`, starting with a
# letter or a digit, so that none can be `..` or hold a `/` and escape the study directory.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_safe_name(name: object) -> bool:
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None


def check_name(name: object, what: str) -> str:
    """`name` if it is safe as a folder name, else ValueError naming `what`."""
    if not is_safe_name(name):
        raise ValueError(
            f"{what}: {name!r} is not allowed as a name; use letters, digits, '_', '-' and '.', "
            "starting with a letter or a digit"
        )
    return name


def sources_dir(study: Path) -> Path:
    return study / "sources"


def experiment_dir(study: Path, experiment: str) -> Path:
    return study / experiment


def trials_dir(study: Path, experiment: str) -> Path:
    return experiment_dir(study, experiment) / "trials"


def run_dir_name(seed: int | None = None) -> str:
    """A trial's run directory: `run`, or `run_s<seed>` for each seed of a trial that runs several."""
    return RUN_DIR if seed is None else f"{RUN_DIR}_s{seed}"


def seed_row_name(trial_name: str, seed: int) -> str:
    """The name of one seed's row (results, report) of a trial that runs several seeds."""
    return f"{trial_name}{SEED_MARK}{seed}"


def row_run_dir(study: Path, experiment: str, row_name: str) -> Path:
    """The run directory of a results row: a trial's, or one seed's of a trial that runs several."""
    trial, _, seed = row_name.partition(SEED_MARK)
    return trials_dir(study, experiment) / trial / run_dir_name(int(seed) if seed else None)


def ray_dir(study: Path, experiment: str) -> Path:
    return experiment_dir(study, experiment) / "ray"


def require_study(study: Path) -> Path:
    """`study`, or FileNotFoundError unless it is a study directory."""
    if not (study / STUDY_FILE).is_file():
        raise FileNotFoundError(f"{study} is not a study directory (no {STUDY_FILE})")
    return study


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (temporary file, then rename), so a reader never sees half a file."""
    write_text_atomic(path, json.dumps(value, indent=2, allow_nan=False) + "\n")
