"""A study directory (see `study.layout`) read into pandas, for the report and for notebooks.

    results = load_study("studies/quickstart")
    results.trials   # one row per trial: ids, `param:<dotted key>` columns, status, error, reason, iterations
    results.evals    # one row per trial x evaluation: every key of its records (per-class IoUs as lists),
                     # plus `wall_time` (when the evaluation happened, see `_wall_time`)
    exp = results.experiment("variants")   # the same, restricted to one experiment, with its plan

Works on a finished, running or partly failed study: a trial without status.json is "running", a truncated
last line of a run's records (a file being written) is ignored (`msl.run_dir.RunDir.read_metrics`), and a
trial that failed before its first evaluation keeps its row in `trials` (with its error) and simply has no
rows in `evals`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from msl.objectives import METRIC_MODES
from msl.run_dir import RunDir
from study import layout
from study.tables import is_missing

PARAM_PREFIX = "param:"
ID_COLUMNS = ["experiment", "trial_name", "variant", "seed", "config"]
STATUS_COLUMNS = ["status", "iterations", "evaluations", "error", "reason", "source_run"]


def param_column(dotted_key: str) -> str:
    """The column holding a searched parameter, e.g. `param:loss.lambda_target`."""
    return f"{PARAM_PREFIX}{dotted_key}"


class Edge(NamedTuple):
    """A configuration's value at the edge of what its search tried (`distributions.edge`)."""

    short: str  # "top of grid", "at lower bound", ...
    words: str  # "the largest value of its grid [0.1, 1, 3]"
    value: Any


@dataclass
class ExperimentResults:
    """One experiment of a study: its plan (plan.json) and the rows of its trials and evaluations."""

    name: str
    plan: layout.Plan
    trials: pd.DataFrame
    evals: pd.DataFrame
    study_path: Path | None = None  # the study directory (run directories, probability maps); None: in memory

    @property
    def searched(self) -> list[str]:
        """Dotted keys of the searched parameters."""
        return list(self.plan.searched)

    @property
    def mode(self) -> str:
        """Whether the objective (plan "metric") is better high or low (`layout.Plan.mode`)."""
        return self.plan.mode

    @property
    def planned_runs(self) -> int:
        """The runs (rows) the plan asks for: its trials times the seeds each runs (`seeds_per_sample`), or
        the rows there are when the plan does not say."""
        trials = self.plan.num_trials
        return trials * self.plan.seeds_per_sample if trials else len(self.trials)

    def edges(self, variant: str, config: str | None) -> dict[str, Edge]:
        """Searched key -> its `Edge`, for each value of `variant`'s configuration `config` at the edge of
        what the search tried. Empty for a confirmation (its configurations are its tuning's: that
        experiment marks them) and for a configuration no trial ran."""
        from study import distributions  # it imports msl.config and so torch: not for `msl-study status`

        trials = self.trials
        chosen = trials[(trials["variant"] == variant) & (trials["config"] == config)]
        if self.plan.confirm or chosen.empty:
            return {}
        edges = {}
        for key in self.searched:
            value = python_value(chosen.iloc[0][param_column(key)])
            found = None if is_missing(value) else distributions.edge(self.plan.searched[key], value, variant)
            if found:
                edges[key] = Edge(*found, value)
        return edges


@dataclass
class StudyResults:
    """Everything a study directory holds, as pandas frames over all experiments."""

    path: Path
    study: dict
    plans: dict[str, layout.Plan]
    trials: pd.DataFrame
    evals: pd.DataFrame

    def experiment(self, name: str) -> ExperimentResults:
        trials = self.trials[self.trials["experiment"] == name].reset_index(drop=True)
        evals = self.evals[self.evals["experiment"] == name].reset_index(drop=True)
        return ExperimentResults(name, self.plans[name], trials, evals, self.path)

    def experiments(self) -> list[ExperimentResults]:
        """The experiments in the order study.json lists them."""
        return [self.experiment(name) for name in self.plans]


def load_study(path: str | Path) -> StudyResults:
    """Read a study directory; experiments whose plan.json is not written yet are left out."""
    path = Path(path)
    study_file = path / layout.STUDY_FILE
    if not study_file.is_file():
        raise FileNotFoundError(f"{path} is not a study directory: {layout.STUDY_FILE} is missing")
    study = layout.read_json(study_file)
    plans, trial_rows, eval_rows = {}, [], []
    for experiment in study.get("experiments", []):
        if not layout.plan_file(path, experiment).is_file():
            continue
        plans[experiment] = layout.read_plan(path, experiment)
        searched = list(plans[experiment].searched)
        labelled = [*searched, *_confirmed_keys(plans[experiment])]
        trials_root = layout.trials_dir(path, experiment)
        trial_dirs = sorted(p for p in trials_root.iterdir() if p.is_dir()) if trials_root.is_dir() else []
        for trial_dir in trial_dirs:
            for trial, records in _load_trial(trial_dir, experiment, searched, labelled):
                trial_rows.append(trial)
                ids = {
                    key: value
                    for key, value in trial.items()
                    if key in ID_COLUMNS or key.startswith(PARAM_PREFIX)
                }
                eval_rows.extend({**ids, **record} for record in records)
    trials = pd.DataFrame(trial_rows, columns=_trial_columns(plans))
    evals = pd.DataFrame(eval_rows)
    for column in [
        *ID_COLUMNS,
        "iteration",
        "wall_time",
        *METRIC_MODES,
    ]:  # present even when nothing was evaluated yet
        if column not in evals:
            evals[column] = pd.Series(dtype=object if column in ID_COLUMNS else float)
    return StudyResults(path, study, plans, trials, evals)


def _trial_columns(plans: dict[str, layout.Plan]) -> list[str]:
    params = {param_column(key): None for plan in plans.values() for key in plan.searched}
    return [*ID_COLUMNS[:4], *params, ID_COLUMNS[4], *STATUS_COLUMNS]


def _confirmed_keys(plan: layout.Plan) -> list[str]:
    """The keys whose values a confirmation took from the experiment it confirms (none for others)."""
    selected = (plan.confirm or {}).get("selected") or {}
    return list(dict.fromkeys(key for configuration in selected.values() for key in configuration))


def _load_trial(
    trial_dir: Path, experiment: str, searched: list[str], labelled: list[str]
) -> list[tuple[dict, list[dict]]]:
    """A trial's row (trial.json + status.json) and its evaluation records (`msl.run_dir`); a trial that runs
    several seeds (seeds_per_sample) gives one row per seed, named `layout.seed_row_name`. `labelled`: the
    keys its configuration is named by (the searched ones, and those a confirmation runs with)."""
    info = _read_optional(trial_dir / layout.TRIAL_FILE)
    status = _read_optional(trial_dir / layout.STATUS_FILE) or {"status": "running"}
    trial_name = info.get("trial_name", trial_dir.name)
    if not info.get("seeds"):
        return [
            _load_run(trial_dir, layout.RUN_DIR, info, status, (searched, labelled), experiment, trial_name)
        ]
    runs = info.get("source_runs") or {}
    return [
        _load_run(
            trial_dir,
            layout.run_dir_name(seed),
            {**info, "seed": seed, "source_run": runs.get(str(seed))},
            status,
            (searched, labelled),
            experiment,
            layout.seed_row_name(trial_name, seed),
        )
        for seed in info["seeds"]
    ]


def _load_run(
    trial_dir: Path,
    run: str,
    info: dict,
    status: dict,
    keys: tuple[list[str], list[str]],
    experiment: str,
    name: str,
) -> tuple[dict, list[dict]]:
    """`keys`: the searched keys (a column each) and those the configuration is named by (`_load_trial`)."""
    records = RunDir(trial_dir / run).read_metrics()
    for record in records:
        record["wall_time"] = _wall_time(trial_dir, record)
    params = _flatten(info.get("params") or {})
    searched, labelled = keys
    chosen = {key: params.get(key) for key in searched}
    iterations = status.get("iterations")
    if iterations is None:
        iterations = records[-1].get("iteration", 0) if records else 0
    row = {
        "experiment": experiment,
        "trial_name": name,
        "variant": info.get("variant") or "default",
        "seed": info.get("seed"),
        **{param_column(key): value for key, value in chosen.items()},
        "config": config_label({key: params.get(key) for key in labelled}),
        "status": status.get("status", "running"),
        "iterations": iterations,
        "evaluations": len(records),
        "error": status.get("error"),
        "reason": status.get("reason"),
        "source_run": info.get("source_run"),
    }
    return row, records


def _wall_time(trial_dir: Path, record: dict) -> float:
    """Unix time of an evaluation: the record's own `time` when it has one, else the trial's start (the mtime
    of trial.json) plus `elapsed_s`. Only orders evaluations across trials (the pruning budget's compute
    axis)."""
    if record.get("time") is not None:
        return float(record["time"])
    trial_file = trial_dir / layout.TRIAL_FILE
    started = trial_file.stat().st_mtime if trial_file.is_file() else math.nan
    return started + float(record.get("elapsed_s", math.nan))


def _read_optional(path: Path) -> dict:
    return layout.read_json(path) if path.is_file() else {}


def _flatten(params: dict, prefix: str = "") -> dict:
    """Nested parameter dicts as dotted keys: {"loss": {"lambda_target": 0.1}} -> {"loss.lambda_target":
    0.1}."""
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def python_value(value: Any) -> Any:
    """A pandas/numpy scalar as the Python value it holds (for YAML, JSON, a trial's config, Optuna)."""
    return value.item() if hasattr(value, "item") else value


def config_label(params: dict) -> str:
    """A short, stable name of a configuration (its searched values), e.g. "lambda_target=0.1, lr=0.00025".

    Values keep 4 significant digits: configurations equal to that precision count as one. "default" when
    nothing is searched."""
    params = {key: value for key, value in params.items() if value is not None}  # None: a key not searched
    if not params:
        return "default"
    short = [key.rsplit(".", 1)[-1] for key in params]
    names = short if len(set(short)) == len(short) else list(params)
    return ", ".join(
        f"{name}={format_value(value)}" for name, value in zip(names, params.values(), strict=True)
    )


def format_value(value: Any) -> str:
    """A parameter value as shown: floats with 4 significant digits, anything else (ints, strings, lists) as
    is."""
    return format(value, ".4g") if isinstance(value, float) else str(value)
