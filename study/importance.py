"""Hyperparameter importance of an experiment's searched parameters, computed by Optuna.

Optuna's evaluators (fANOVA and PED-ANOVA) read a study's trials. Whatever searched the space (grid, random,
Optuna), the finished trials of one variant and one seed are put into an in-memory Optuna study, each with
its parameters and the value its objective selects (the label-free metric at its selected checkpoint, as in
section 1 of the report). With several seeds the importances are computed per seed and reported as mean and
spread, so that a parameter that only explains seed noise shows a wide spread. Trials the scheduler stopped
early are left out: their value at an earlier iteration is not comparable with a finished trial's.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pandas as pd

from study.distributions import to_optuna
from study.results import ExperimentResults, param_column, python_value

EVALUATORS = ("fANOVA", "PED-ANOVA")
MIN_TRIALS = 4  # fewer finished trials per (variant, seed) than this: no importance is computed


def _evaluator(name: str, seed: int):
    if name == "fANOVA":
        return optuna.importance.FanovaImportanceEvaluator(seed=seed)
    return optuna.importance.PedAnovaImportanceEvaluator()


def _study(trials: pd.DataFrame, keys: list[str], specs: dict, mode: str) -> optuna.Study:
    distributions = {key: to_optuna(specs[key], trials[param_column(key)]) for key in keys}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for row in trials.to_dict("records"):
        params = {key: python_value(row[param_column(key)]) for key in keys}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=row["objective"])
        )
    return study


def _varied(values: pd.Series) -> bool:
    """Whether every trial has the parameter and they do not all share one value."""
    return bool(values.notna().all()) and values.nunique() > 1


def _evaluate(study: optuna.Study, seed: int):
    """(evaluator name, {key: importance normalised to sum to 1}) for each of EVALUATORS."""
    for name in EVALUATORS:
        with warnings.catch_warnings():  # PED-ANOVA warns when few trials fall in its top quantile
            warnings.simplefilter("ignore")
            yield name, optuna.importance.get_param_importances(study, evaluator=_evaluator(name, seed))


def importances(exp: ExperimentResults, picks: pd.DataFrame, mode: str) -> pd.DataFrame:
    """One row per (variant, parameter, evaluator): `mean` and `std` of the importance over seeds, `seeds`
    (how many seeds had enough trials), `trials` (finished trials per seed, summed). `picks` is
    `Selection.picks`. Empty when no variant searched two or more parameters over at least MIN_TRIALS finished
    trials of a seed."""
    finished = picks[(picks["status"] == "finished") & picks["objective"].notna()]
    finished = finished.merge(exp.trials[["trial_name", *map(param_column, exp.searched)]], on="trial_name")
    rows = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per in-memory study created
    try:
        for (variant, seed), trials in finished.groupby(["variant", "seed"], sort=True):
            keys = [key for key in exp.searched if _varied(trials[param_column(key)])]
            # one parameter explains everything by definition: importances need two
            if len(keys) >= 2 and len(trials) >= MIN_TRIALS:
                study = _study(trials, keys, exp.plan.searched, mode)
                for name, values in _evaluate(study, int(seed)):
                    rows += [
                        {"variant": variant, "parameter": key, "evaluator": name, "seed": seed}
                        | {"importance": values[key], "trials": len(trials)}
                        for key in keys
                    ]
    finally:
        optuna.logging.set_verbosity(verbosity)
    frame = pd.DataFrame(rows, columns=["variant", "parameter", "evaluator", "seed", "importance", "trials"])
    return (
        frame.groupby(["variant", "parameter", "evaluator"], sort=False)
        .agg(
            mean=("importance", "mean"),
            std=("importance", lambda values: np.std(values, ddof=1) if len(values) > 1 else math.nan),
            seeds=("seed", "nunique"),
            trials=("trials", "sum"),
        )
        .reset_index()
    )
