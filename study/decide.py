"""The study's decision rule: which checkpoint of each trial and which configuration of each variant an
experiment's own objective selects, and so which configurations a confirmation trains.

The rule (plan "metric"/"mode", label-free unless the plan says oracle): per trial the checkpoint with the
best objective (the earliest on ties), per variant the configuration whose best objective is best on average
over seeds; or, when the plan names `choose_by`, whose `choose_by` value at those checkpoints is best on
average (a study-level validator is computed from the saved softmax maps by `study.selection`, imported
only then). The runner (`confirmed_configurations`), the report, `msl-study status` and `msl-study compare`
all apply it from here; the target mIoU (`TARGET`) is what the tables report, never what selects. This module
reads results only: no plotting, no Optuna, no scipy unless a study-level validator chooses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from msl.objectives import STUDY_VALIDATORS, is_better, metric_mode
from study import layout
from study.layout import FAILED_STATUSES
from study.progress import log
from study.results import ExperimentResults, load_study, param_column, python_value

if TYPE_CHECKING:
    from study.space import Experiment

TARGET = "oracle_miou"  # mIoU on the target val labels: what every table reports, never what selects


def best_label(values: pd.Series, mode: str):
    """Index label of the best non-NaN value under `mode` (the first on ties: the earliest checkpoint), or
    None when there is none."""
    best, best_value = None, math.nan
    for label, value in pd.to_numeric(values, errors="coerce").items():
        if is_better(value, best_value, mode):
            best, best_value = label, value
    return best


@dataclass
class Selection:
    """What an experiment's own objective selects.

    `picks` has one row per trial that did not error or diverge and has evaluations: trial_name, variant,
    seed, config, status, `objective` (the trial's best objective value), `selected_row` (label in `evals` of
    the checkpoint the objective picks, NaN when the objective was never reported) and `final_row` (the last
    evaluation).

    `configs` maps each variant to the configuration with the best mean over seeds of `choice` (the
    `chooser`'s value at the selected checkpoint: the objective itself unless the plan names `choose_by`;
    None: no trial of the variant has one)."""

    metric: str
    mode: str
    oracle: bool
    evals: pd.DataFrame
    picks: pd.DataFrame
    configs: dict[str, str | None]
    chooser: str  # what picked the configurations: the plan's choose_by, else the objective

    def chosen_picks(self, variant: str) -> pd.DataFrame:
        config = self.configs.get(variant)
        return self.picks[(self.picks["variant"] == variant) & (self.picks["config"] == config)]

    def rows(self, variant: str, which: str = "selected") -> pd.DataFrame:
        """The evaluations ("selected" or "final" checkpoints) of the variant's chosen configuration."""
        labels = self.chosen_picks(variant)[f"{which}_row"].dropna().astype(int)
        return self.evals.loc[labels]

    def checkpoints(self, evals: pd.DataFrame | None = None) -> pd.DataFrame:
        """The checkpoint the objective selected in each trial, one row per trial that has one, from `evals`
        (default: this selection's; its rows carry the same labels) less the rows `evals` lacks: what a
        `choose_by` (or the objective) scores configurations at."""
        evals = self.evals if evals is None else evals
        labels = self.picks["selected_row"].dropna().astype(int)
        return evals.loc[evals.index.intersection(labels)]

    def values(self, variant: str, column: str = TARGET, which: str = "selected") -> pd.Series:
        """`column` at those checkpoints, one value per seed (several trials of one seed are averaged)."""
        return self.rows(variant, which).groupby("seed")[column].mean().dropna()


def select(exp: ExperimentResults) -> Selection:
    """Apply the experiment's objective: per trial the checkpoint, per variant the configuration."""
    metric = exp.plan.metric
    mode = exp.mode
    chooser = exp.plan.choose_by or metric
    all_evals = exp.evals
    if chooser in STUDY_VALIDATORS and chooser not in all_evals:
        from study.selection import with_study_validators  # reads the saved maps: only when asked for

        all_evals = with_study_validators(exp)
    picks = []
    usable = exp.trials[~exp.trials["status"].isin(FAILED_STATUSES)]
    by_trial = dict(list(all_evals.groupby("trial_name", sort=False)))  # one pass, not one filter per trial
    for trial in usable[["trial_name", "variant", "seed", "config", "status"]].to_dict("records"):
        if trial["trial_name"] not in by_trial:
            continue
        evals = by_trial[trial["trial_name"]].sort_values("iteration", kind="stable")
        selected = best_label(evals[metric], mode)
        objective = math.nan if selected is None else evals.at[selected, metric]
        choice = math.nan if selected is None else evals.at[selected, chooser]
        picks.append(
            {
                **trial,
                "objective": objective,
                "choice": choice,
                "selected_row": selected,
                "final_row": evals.index[-1],
            }
        )
    picks = pd.DataFrame(
        picks,
        columns=[
            "trial_name",
            "variant",
            "seed",
            "config",
            "status",
            "objective",
            "choice",
            "selected_row",
            "final_row",
        ],
    )
    configs = {}
    for variant in variants_of(exp):
        scores = picks[picks["variant"] == variant].groupby("config", sort=False)["choice"].mean()
        configs[variant] = best_label(scores, metric_mode(chooser) if chooser != metric else mode)
    return Selection(metric, mode, exp.plan.oracle, all_evals, picks, configs, chooser)


def selected_checkpoints(exp: ExperimentResults, evals: pd.DataFrame) -> pd.DataFrame:
    """`Selection.checkpoints` of the experiment with `evals` as its evaluations (e.g. with study-level
    validators, or a subset of its trials)."""
    return select(dataclasses.replace(exp, evals=evals)).checkpoints()


def variants_of(exp: ExperimentResults) -> list[str]:
    """The plan's variants in plan order, then any other variant a trial names."""
    names = list(exp.plan.variants)
    return names + [name for name in exp.trials["variant"].unique() if name not in names]


def confirmed_configurations(study_dir: Path, experiment: Experiment) -> dict[str, dict]:
    """For a confirmation: each variant's configuration (searched key -> value) that the earlier experiment
    selected with its own objective, by the rule of this module (`select`: per trial the best
    checkpoint's objective, per variant the configuration with the best mean over seeds of the objective or
    of its `choose_by`). Recorded in the plan, so that a resumed study confirms the same configurations. A
    variant the earlier experiment did not search (e.g. source_only) has no entry: it runs with its fixed
    settings."""
    if experiment.confirm is None:
        return {}
    if layout.plan_file(study_dir, experiment.name).is_file():
        return layout.read_plan(study_dir, experiment.name).confirm["selected"]
    tuned = load_study(study_dir).experiment(experiment.confirm)
    selection = select(tuned)
    configurations = {}
    for variant, config in selection.configs.items():
        if variant not in experiment.variants:
            continue
        if config is None:
            raise RuntimeError(
                f"experiment {experiment.name!r} confirms {experiment.confirm!r}, but no trial of "
                f"variant {variant!r} there has a value of {selection.chooser!r} at its selected checkpoints"
            )
        chosen = tuned.trials[(tuned.trials["variant"] == variant) & (tuned.trials["config"] == config)].iloc[
            0
        ]
        configuration = {
            key: python_value(chosen[param_column(key)])
            for key in tuned.searched
            if pd.notna(chosen[param_column(key)])  # a key this variant's trials had
        }
        if configuration:
            configurations[variant] = configuration
            log(
                f"{experiment.name}: {variant} runs with {config} (selected in {experiment.confirm!r} by "
                f"{selection.chooser})"
            )
    return configurations
