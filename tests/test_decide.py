"""The decision rule (study.decide) on hand-made numbers: the earliest checkpoint on ties, NaN never chosen,
and per variant the configuration whose best objective is best on average over seeds."""

from __future__ import annotations

import math

import pandas as pd

from study import layout
from study.decide import best_label, select, variants_of
from study.results import ExperimentResults


def test_best_label_keeps_the_first_of_equals_and_never_picks_a_missing_value():
    values = pd.Series([0.3, math.nan, 0.5, 0.5, None], index=[10, 20, 30, 40, 50])
    assert best_label(values, "max") == 30
    assert best_label(values, "min") == 10
    assert best_label(pd.Series([math.nan, None], dtype=object), "max") is None


def test_select_picks_per_trial_the_best_checkpoint_and_per_variant_the_best_mean_configuration():
    # config "a": seed 0 best 0.6, seed 1 best 0.2 (mean 0.4); config "b": 0.45 and 0.45 (mean 0.45)
    objective = {("a", 0): [0.5, 0.6], ("a", 1): [0.2, 0.1], ("b", 0): [0.45, 0.3], ("b", 1): [0.4, 0.45]}
    trials, evals = [], []
    for (config, seed), values in objective.items():
        name = f"{config}{seed}"
        trials.append(
            {"trial_name": name, "variant": "v", "seed": seed, "config": config, "status": "finished"}
        )
        evals += [
            {
                "trial_name": name,
                "seed": seed,
                "iteration": 10 * (i + 1),
                "target_im": value,
                "oracle_miou": 1.0,
            }
            for i, value in enumerate(values)
        ]
    trials.append({"trial_name": "e0", "variant": "v", "seed": 0, "config": "c", "status": "error"})
    evals.append({"trial_name": "e0", "seed": 0, "iteration": 10, "target_im": 0.99, "oracle_miou": 1.0})
    plan = layout.Plan(experiment="x", metric="target_im", mode="max", max_iterations=20, variants={"v": {}})
    exp = ExperimentResults("x", plan, pd.DataFrame(trials), pd.DataFrame(evals))
    selection = select(exp)
    assert selection.configs == {"v": "b"}  # the errored trial's 0.99 counts for nothing
    picks = selection.picks.set_index("trial_name")
    assert picks.loc["a0", "objective"] == 0.6 and picks.loc["b1", "objective"] == 0.45
    assert selection.evals.loc[picks.loc["b1", "selected_row"], "iteration"] == 20
    assert variants_of(exp) == ["v"]
