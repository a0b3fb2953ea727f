"""The pruning audit (study/pruning.py) on a hand-made ASHA experiment, against numbers worked out here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from study import layout
from study.pruning import rung_audit
from study.results import ExperimentResults

# trial: status, objective (target_im, lower is better) at iterations 10, 20, 30 (as far as it ran)
TRIALS = {
    "a": ("finished", (0.50, 0.40, 0.30)),
    "b": ("finished", (0.45, 0.42, 0.35)),
    "c": ("finished", (0.60, 0.41, 0.20)),  # the final pick: only third at the first rung
    "d": ("finished", (0.40, 0.43, 0.38)),
    "e": ("stopped", (0.70,)),
    "f": ("stopped", (0.65, 0.44)),
    "g": ("error", (0.10,)),  # left out everywhere
}


def _experiment() -> tuple[ExperimentResults, pd.DataFrame]:
    trials, evals, picks = [], [], []
    for name, (status, values) in TRIALS.items():
        trials.append({"trial_name": name, "status": status, "iterations": 10 * len(values)})
        evals += [
            {"trial_name": name, "iteration": 10 * (i + 1), "target_im": v} for i, v in enumerate(values)
        ]
        if status != "error":
            picks.append({"trial_name": name, "status": status, "objective": min(values)})
    plan = layout.Plan(experiment="sweep", metric="target_im", mode="min", max_iterations=30)
    return ExperimentResults("sweep", plan, pd.DataFrame(trials), pd.DataFrame(evals)), pd.DataFrame(picks)


def _spearman(x: list[float], y: list[float]) -> float:
    """Pearson correlation of the ranks (no ties here), written out."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def test_each_rung_where_trials_stopped_is_audited_against_the_finished_trials():
    exp, picks = _experiment()
    audit = rung_audit(exp, picks, "target_im", "min").set_index("rung")
    assert list(audit.index) == [10, 20]  # the iterations at which trials were stopped
    final = {"a": 0.30, "b": 0.35, "c": 0.20, "d": 0.38}
    at10 = {"a": 0.50, "b": 0.45, "c": 0.60, "d": 0.40}
    at20 = {"a": 0.40, "b": 0.42, "c": 0.41, "d": 0.43}
    assert audit.at[10, "spearman"] == pytest.approx(_spearman(list(at10.values()), list(final.values())))
    assert audit.at[20, "spearman"] == pytest.approx(_spearman(list(at20.values()), list(final.values())))
    assert audit.at[10, "trials evaluated"] == 6 and audit.at[10, "continued"] == 5  # e stopped at 10
    assert audit.at[20, "trials evaluated"] == 5 and audit.at[20, "continued"] == 4  # f stopped at 20
    assert (audit["finished trials"] == 4).all()
    # c (final 0.20) was 4th of 6 at iteration 10 (0.60; f 0.65 and e 0.70 were worse) and 2nd of 5 at 20.
    assert audit.at[10, "pick's rank"] == 4 and audit.at[20, "pick's rank"] == 2


def test_a_max_objective_ranks_the_other_way_and_no_stopped_trial_means_no_rung():
    exp, picks = _experiment()
    exp.evals["target_im"] = -exp.evals["target_im"]  # the same ordering, as a "higher is better" metric
    picks["objective"] = -picks["objective"]
    audit = rung_audit(exp, picks, "target_im", "max").set_index("rung")
    assert audit.at[10, "pick's rank"] == 4 and audit.at[20, "pick's rank"] == 2
    exp.trials["status"] = exp.trials["status"].replace("stopped", "finished")
    assert rung_audit(exp, picks, "target_im", "max").empty
    assert math.isnan(rung_audit(*_few(), "target_im", "min").at[0, "spearman"])


def _few():
    """Two finished trials only: no correlation can be computed."""
    exp, picks = _experiment()
    keep = ["a", "b", "e"]
    exp.trials = exp.trials[exp.trials["trial_name"].isin(keep)]
    exp.evals = exp.evals[exp.evals["trial_name"].isin(keep)]
    return exp, picks[picks["trial_name"].isin(keep)]
