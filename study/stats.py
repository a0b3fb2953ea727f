"""The report's statistics: seed statistics with a Student-t interval, the paired change against a baseline
with its paired t-test, and the signed rank agreement of a validator with the target mIoU.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from msl.objectives import oriented


def seed_statistics(values: pd.Series) -> dict[str, float]:
    """Mean, sample standard deviation and 95% Student-t confidence interval over seeds."""
    n = len(values)
    mean = values.mean() if n else math.nan
    std = values.std(ddof=1) if n > 1 else math.nan
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"n_seeds": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_change(values: pd.Series, baseline: pd.Series) -> dict[str, float]:
    """Mean paired difference over the seeds both series have, with the p-value of a paired t-test and the
    95% Student-t interval of the mean difference (`change_ci_low`, `change_ci_high`)."""
    seeds = values.index.intersection(baseline.index)
    difference = values[seeds] - baseline[seeds]
    p_value = math.nan
    if len(seeds) > 1 and difference.std() > 0:
        p_value = stats.ttest_rel(values[seeds], baseline[seeds]).pvalue
    interval = seed_statistics(difference)
    return {
        "change": difference.mean() if len(seeds) else math.nan,
        "p_value": p_value,
        "n_pairs": len(seeds),
        "change_ci_low": interval["ci_low"],
        "change_ci_high": interval["ci_high"],
    }


def t_quantile(n: int) -> float:
    """The Student-t factor of a 95% interval over `n` values (n - 1 degrees of freedom): how many standard
    errors the interval reaches on each side."""
    return float(stats.t.ppf(0.975, n - 1))


def rank_agreement(validator: pd.Series, target: pd.Series, mode: str) -> dict[str, float]:
    """Spearman and Kendall correlation of a validator with the target mIoU, signed so that positive means the
    validator orders checkpoints as the target does (a "min" validator is negated first)."""
    pairs = pd.concat([validator, target], axis=1).dropna()
    if len(pairs) < 3 or pairs.iloc[:, 0].nunique() < 2 or pairs.iloc[:, 1].nunique() < 2:
        return {"spearman": math.nan, "kendall": math.nan, "n": len(pairs)}
    first, second = oriented(pairs.iloc[:, 0], mode), pairs.iloc[:, 1]
    return {
        "spearman": stats.spearmanr(first, second).statistic,
        "kendall": stats.kendalltau(first, second).statistic,
        "n": len(pairs),
    }
