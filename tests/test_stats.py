"""study/stats.py against computations written out here: means and deviations by loops, the Student-t
interval by scipy's `t.interval`, the paired t-test from its formula, Spearman as the Pearson correlation of
ranks and Kendall by counting pairs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study.stats import paired_change, rank_agreement, seed_statistics

SEED_VALUES = pd.Series({0: 0.412, 1: 0.437, 2: 0.405, 3: 0.451})


def test_seed_statistics_mean_sample_deviation_and_student_t_interval():
    values = list(SEED_VALUES)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=std / math.sqrt(len(values)))
    result = seed_statistics(SEED_VALUES)
    assert result["n_seeds"] == 4
    assert result["mean"] == pytest.approx(mean)
    assert result["std"] == pytest.approx(std)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high))


def test_one_seed_has_a_mean_but_no_spread_and_none_has_nothing():
    one = seed_statistics(pd.Series({0: 0.4}))
    assert one["mean"] == 0.4 and all(math.isnan(one[key]) for key in ("std", "ci_low", "ci_high"))
    none = seed_statistics(pd.Series(dtype=float))
    assert none["n_seeds"] == 0 and math.isnan(none["mean"])


def test_paired_change_uses_the_common_seeds_and_the_paired_t_test():
    baseline = pd.Series({1: 0.40, 2: 0.39, 3: 0.43, 4: 0.38})  # seed 0 only in the values, 4 only here
    common = [1, 2, 3]
    differences = [SEED_VALUES[seed] - baseline[seed] for seed in common]
    mean = sum(differences) / len(differences)
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (len(differences) - 1))
    t = mean / (sd / math.sqrt(len(differences)))
    p_value = 2 * stats.t.sf(abs(t), len(differences) - 1)
    result = paired_change(SEED_VALUES, baseline)
    assert result["n_pairs"] == 3
    assert result["change"] == pytest.approx(mean)
    assert result["p_value"] == pytest.approx(p_value)


def test_a_constant_change_or_a_single_pair_has_no_p_value():
    shifted = SEED_VALUES + 0.01
    constant = paired_change(shifted, SEED_VALUES)
    assert constant["change"] == pytest.approx(0.01) and math.isnan(constant["p_value"])
    single = paired_change(SEED_VALUES, pd.Series({2: 0.4}))
    assert single["n_pairs"] == 1 and single["change"] == pytest.approx(0.005)
    assert math.isnan(single["p_value"])
    assert math.isnan(paired_change(SEED_VALUES, pd.Series({9: 0.4}))["change"])


def _ranks(values) -> np.ndarray:
    """Ranks 1..n of distinct values."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = np.empty(len(values))
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return ranks


def _kendall(x, y) -> float:
    """Kendall's tau of values without ties: (concordant - discordant pairs) / pairs."""
    signs = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(len(x)), 2)]
    return sum(signs) / len(signs)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_rank_agreement_is_signed_by_the_validators_direction(mode):
    rng = np.random.default_rng(4)
    target = rng.uniform(0.3, 0.5, size=9)
    validator = target + rng.normal(0, 0.05, size=9)  # agrees when higher is better
    if mode == "min":
        validator = -validator  # a "min" validator: lower is better, so it agrees as well
    index = pd.RangeIndex(9)
    result = rank_agreement(pd.Series(validator, index), pd.Series(target, index), mode)
    oriented = validator if mode == "max" else -validator
    assert result["spearman"] == pytest.approx(np.corrcoef(_ranks(oriented), _ranks(target))[0, 1])
    assert result["kendall"] == pytest.approx(_kendall(oriented, target))
    assert result["spearman"] > 0 and result["n"] == 9


def test_rank_agreement_drops_missing_pairs_and_needs_three_varying_points():
    validator = pd.Series([0.1, np.nan, 0.3, 0.2, 0.5])
    target = pd.Series([0.4, 0.5, np.nan, 0.45, 0.6])
    result = rank_agreement(validator, target, "max")
    assert result["n"] == 3 and result["spearman"] == pytest.approx(1.0)
    assert math.isnan(rank_agreement(validator[:2], target[:2], "max")["spearman"])
    flat = rank_agreement(pd.Series([0.2, 0.2, 0.2]), pd.Series([0.1, 0.2, 0.3]), "max")
    assert math.isnan(flat["kendall"]) and flat["n"] == 3
