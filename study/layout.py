"""Where a study keeps what: the contract between the runner (which writes) and every reader (results,
report, status, compare). Every file and folder name of a study directory is defined here.

    STUDY/
      space.given.yaml                the space file as given to `msl-study run`
      space.yaml                      the resolved space (base config inlined, paths expanded): what a
                                      resume runs
      study.json                      {"name", "created", "git_revision", "versions", "experiments": [names]}
      driver.json                     the driver's heartbeat (study.heartbeat): {"state", "pid", "hostname",
                                      "started", "time"}, rewritten every few seconds while it runs
      driver.log                      the full tracebacks of errors the driver stopped on (a source model's
                                      worker error), each under a time stamp; the terminal gets one line
      sources/<key>/                  one msl run directory per source model (stage source), reused by key
      <experiment>/
        plan.json                     the resolved experiment, a `Plan` (below)
        configs/source_seed<seed>.yaml  the config of each seed's source model
        ray/                          Ray Tune's own experiment state (restore, resume)
        optuna.journal                the Optuna study of an Optuna search (optuna-dashboard,
                                      optuna.load_study)
        trials/<trial_name>/
          trial.json                  {"trial_name", "experiment", "variant", "seed", "params", "overrides",
                                       "source_run", "node_id" (the Ray node that runs the trial)}; a trial
                                       of several seeds (seeds_per_sample) has "seeds": [...] and
                                       "source_runs": {seed: run} instead
          status.json                 {"status", "iterations", "error", "reason"}, written when the trial ends
          run/                        the trial's msl run directory (msl.run_dir; its validator_probs/ are
                                      read by study.selection); run_s<seed>/ for each of several seeds

plan.json holds a `Plan` (below): the runner writes it with `write_plan` before an experiment's first trial,
and every reader (results, report, status, compare, importance) reads it with `read_plan`.

A trial's status is "finished" (ran every iteration), "stopped" (stopped early by the scheduler: `reason` says
why), "error" (`error` holds the message), "diverged" (a loss term or the objective became NaN or infinite:
`error` says which) or, while no status.json exists yet, "running". What a run records per evaluation:
msl.run_dir.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msl.io import write_text_atomic
from msl.objectives import metric_mode

SPACE_FILE = "space.yaml"
SPACE_GIVEN_FILE = "space.given.yaml"
STUDY_FILE = "study.json"
DRIVER_FILE = "driver.json"
DRIVER_LOG = "driver.log"
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


def source_config_file(study: Path, experiment: str, seed: int) -> Path:
    return experiment_dir(study, experiment) / "configs" / f"source_seed{seed}.yaml"


def ray_dir(study: Path, experiment: str) -> Path:
    return experiment_dir(study, experiment) / "ray"


def plan_file(study: Path, experiment: str) -> Path:
    return experiment_dir(study, experiment) / PLAN_FILE


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


@dataclass(kw_only=True)
class Plan:
    """An experiment as the runner resolved it, in plan.json (keys in this order). A default is what a reader
    assumes when a plan lacks the key (a plan.json written before the key existed)."""

    experiment: str
    metric: str  # the objective, a key of msl.objectives.METRIC_MODES
    mode: str | None = None  # "max" or "min"; None: the metric's own direction (set when the plan is made)
    oracle: bool = False  # whether the objective reads target test labels (the user named an oracle metric)
    # the validator that picks each variant's configuration (study.decide); None: the objective
    choose_by: str | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> its overrides, in plan order
    seeds: list[int] = field(default_factory=list)
    # dotted key -> distribution spec (study.space), or {"grid per variant": {variant: values}} for a
    # variant's own grid
    searched: dict[str, dict] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=lambda: {"name": "fifo"})  # study.space's scheduler
    search: dict[str, Any] | None = None  # study.space's Search: {"algorithm", "num_samples", "seed"}
    num_samples: int = 1
    num_trials: int | None = None  # the trials Tune runs; None: as many as have started
    seeds_per_sample: int = 1  # seeds each trial trains (one row per seed in the results)
    max_iterations: int  # the iterations of a trial that runs to the end
    eval_every: int | None = None
    benchmark: str | None = None  # a key of study/paper_results.yaml, maybe with "/<city>"
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    # a confirmation: {"from": the tuning experiment, "by": what chose there (its choose_by or objective),
    # "selected": {variant: {dotted key: value}}}, the configurations it runs
    confirm: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.mode = metric_mode(self.metric, self.mode)


def write_plan(study: Path, plan: Plan) -> None:
    write_json(plan_file(study, plan.experiment), dataclasses.asdict(plan))


def read_plan(study: Path, experiment: str) -> Plan:
    """The experiment's plan.json; ValueError naming the file if it holds a key `Plan` does not know or
    lacks one it needs."""
    path = plan_file(study, experiment)
    data = read_json(path)
    fields = {f.name: f for f in dataclasses.fields(Plan)}
    unknown = sorted(set(data) - set(fields))
    needed = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in needed if name not in data]
    if unknown or missing:
        raise ValueError(
            f"{path}: not a plan this version of msl reads (unknown keys {unknown}, missing keys {missing}); "
            "rerun the experiment or read the file with the msl version that wrote it"
        )
    return Plan(**data)
