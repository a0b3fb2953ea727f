"""The pruning audit: could the scheduler's early decisions be trusted on this objective?

A scheduler that stops trials at a rung (ASHA) bets that the objective at the rung orders the trials as the
objective at the end would. Among the trials that ran to the end, both are known, so the bet can be checked
after the fact: per rung, the rank correlation of the objective at the rung with each trial's final objective
(the value the report selects by, a trial's best checkpoint), and the rank at the rung of the trial the study
ends up picking. A low correlation says that the trials stopped there may have held the winner; only a study
that runs them to the end (benchmarks/asha_vs_full.py) says what was lost.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from msl.objectives import oriented
from study.layout import FAILED_STATUSES
from study.results import ExperimentResults

COLUMNS = ["rung", "trials evaluated", "continued", "spearman", "finished trials", "pick's rank"]


def rung_audit(exp: ExperimentResults, picks: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """One row per iteration at which trials were stopped: trials with an evaluation there, how many went on,
    Spearman of the objective there against the final objective over the trials that finished (NaN with fewer
    than 3), and the rank there (1 = best) of the trial with the best final objective. `picks` is
    `study.decide.Selection.picks`."""
    usable = exp.trials[~exp.trials["status"].isin(FAILED_STATUSES)]
    final = picks.set_index("trial_name")["objective"].dropna()
    if final.empty:
        return pd.DataFrame(columns=COLUMNS)
    pick = oriented(final, mode).idxmax()  # the first on ties
    finished = usable.loc[usable["status"] == "finished", "trial_name"]
    rows = []
    for rung in sorted(set(usable.loc[usable["status"] == "stopped", "iterations"])):
        evals = exp.evals[
            (exp.evals["iteration"] == rung) & exp.evals["trial_name"].isin(usable["trial_name"])
        ]
        at = evals.groupby("trial_name")[metric].last().dropna()
        pairs = pd.concat([at, final], axis=1, join="inner").loc[lambda frame: frame.index.isin(finished)]
        spearman = (
            stats.spearmanr(pairs.iloc[:, 0], pairs.iloc[:, 1]).statistic if len(pairs) >= 3 else math.nan
        )
        rank = int((oriented(at, mode) > oriented(at[pick], mode)).sum()) + 1 if pick in at.index else None
        continued = int((usable.set_index("trial_name").loc[at.index, "iterations"] > rung).sum())
        rows.append([int(rung), len(at), continued, spearman, len(pairs), rank])
    return pd.DataFrame(rows, columns=COLUMNS)
