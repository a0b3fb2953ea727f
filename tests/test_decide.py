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
    trials, evals = _rows(objective)
    trials.append({"trial_name": "e0", "variant": "v", "seed": 0, "config": "c", "status": "error"})
    evals.append({"trial_name": "e0", "seed": 0, "iteration": 10, "target_im": 0.99, "oracle_miou": 0.5})
    plan = layout.Plan(experiment="x", metric="target_im", mode="max", max_iterations=20, variants={"v": {}})
    exp = ExperimentResults("x", plan, pd.DataFrame(trials), pd.DataFrame(evals))
    selection = select(exp)
    assert selection.configs == {"v": "b"}  # the errored trial's 0.99 counts for nothing
    picks = selection.picks.set_index("trial_name")
    assert picks.loc["a0", "objective"] == 0.6 and picks.loc["b1", "objective"] == 0.45
    assert selection.evals.loc[picks.loc["b1", "selected_row"], "iteration"] == 20
    assert variants_of(exp) == ["v"]


def _rows(objective: dict, other: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Trials and evaluations of one variant, a trial per (config, seed) of `objective` (target_im per
    iteration), with `other` (target_bnm per iteration) when given."""
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
                "oracle_miou": 0.5,
            }
            | ({"target_bnm": other[config, seed][i]} if other else {})
            for i, value in enumerate(values)
        ]
    return trials, evals


def _two_configurations(objective: dict, other: dict) -> ExperimentResults:
    """One variant, configurations "a" and "b" on seeds 0 and 1: `objective` (target_im, min) and `other`
    (target_bnm, max) per (config, seed), one value per iteration."""
    trials, evals = _rows(objective, other)
    plan = layout.Plan(experiment="x", metric="target_im", max_iterations=20, variants={"v": {}})
    return ExperimentResults("x", plan, pd.DataFrame(trials), pd.DataFrame(evals))


def test_choose_by_picks_the_configuration_by_its_own_validator_at_the_checkpoints_the_objective_selects():
    # target_im (min) selects iteration 10 in a0 and b0, 20 in a1 and b1, and prefers "a" (mean 0.15 < 0.35);
    # target_bnm at those checkpoints: a 0.1 and 0.2 (mean 0.15), b 0.3 and 0.4 (mean 0.35): "b". Its values
    # at the checkpoints target_im did not select would prefer "a" (0.9 against 0.0).
    objective = {("a", 0): [0.1, 0.2], ("a", 1): [0.3, 0.2], ("b", 0): [0.3, 0.4], ("b", 1): [0.5, 0.4]}
    other = {("a", 0): [0.1, 0.9], ("a", 1): [0.9, 0.2], ("b", 0): [0.3, 0.0], ("b", 1): [0.0, 0.4]}
    exp = _two_configurations(objective, other)
    assert select(exp).configs == {"v": "a"} and select(exp).chooser == "target_im"
    exp.plan.choose_by = "target_bnm"
    selection = select(exp)
    assert selection.configs == {"v": "b"} and selection.chooser == "target_bnm"
    picks = selection.picks.set_index("trial_name")
    assert picks["choice"].to_dict() == {"a0": 0.1, "a1": 0.2, "b0": 0.3, "b1": 0.4}
    assert picks["objective"].to_dict() == {"a0": 0.1, "a1": 0.2, "b0": 0.3, "b1": 0.4}
    exp.plan.choose_by = "target_entropy"  # a validator in its own direction (min)
    exp.evals["target_entropy"] = exp.evals["target_bnm"]
    assert select(exp).configs == {"v": "a"}
