"""The vectorised checkpoint audit (one sort for all trials) against a naive loop over trials, on random
evaluations with many ties in the validator, so that the earliest-checkpoint tie rule is exercised."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.decide import TARGET
from study.selection import TOP_K, checkpoint_audit


def naive(evals: pd.DataFrame, validator: str, mode: str) -> dict[str, float]:
    regrets, tops = [], {k: [] for k in TOP_K}
    for _, trial in evals.groupby("trial_name"):
        rows = trial.sort_values("iteration").to_dict("records")
        score = [r[validator] if mode == "max" else -r[validator] for r in rows]
        best = max(range(len(rows)), key=lambda i: (score[i], -i))  # the earliest of the best
        regrets.append(max(r[TARGET] for r in rows) - rows[best][TARGET])
        order = sorted(range(len(rows)), key=lambda i: (-score[i], i))
        for k in TOP_K:
            tops[k].append(np.mean([rows[i][TARGET] for i in order[:k]]))
    return {
        "regret": np.mean(regrets),
        "worst_regret": max(regrets),
        **{f"top{k}": np.mean(v) for k, v in tops.items()},
    }


@pytest.mark.parametrize("mode", ["max", "min"])
def test_checkpoint_audit_matches_a_loop_over_trials(mode):
    rng = np.random.default_rng(3)
    rows = [
        {
            "trial_name": f"t{trial:03d}",
            "iteration": iteration,
            "v": float(rng.integers(0, 4)),  # few values: ties everywhere
            TARGET: float(rng.uniform()),
        }
        for trial in range(60)
        for iteration in rng.permutation(np.arange(1, int(rng.integers(1, 9)) + 1))  # shuffled rows
    ]
    evals = pd.DataFrame(rows).sample(frac=1, random_state=0)
    audit = checkpoint_audit(evals, "v", mode)
    expected = naive(evals, "v", mode)
    assert audit["trials"] == 60
    for key, value in expected.items():
        assert audit[key] == pytest.approx(value), key
