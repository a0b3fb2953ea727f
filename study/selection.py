"""Label-free model selection across a study: the study-level validators and the selection audit.

Study-level validators need predictions of several checkpoints on the same images, so they are computed here
from the low-resolution softmax maps each evaluation saves (`msl.probs_maps`), not by the trainer:

* `ensemble_agreement` (EnsV: "Ensembling Validation for Unsupervised Domain Adaptation", NeurIPS 2024): the
  mean softmax of all candidate checkpoints of an experiment (every evaluation of its trials that did not
  error) is the ensemble; a checkpoint scores the fraction of validator pixels where its argmax equals the
  ensemble's argmax. Higher is better.
* `seed_disagreement`: for a configuration run on several seeds, the fraction of validator pixels where two
  seeds' argmax differ, averaged over pairs of seeds, at the same iteration (a checkpoint scores its mean
  disagreement with the other seeds). It approximates the error without labels; lower is better.

The audit asks, per validator, how close its choices come to the oracle's (the target mIoU), at three levels
that answer different questions:

* checkpoint level (within trials): which evaluation of a trial to keep. Per trial: regret = the trial's best
  target mIoU minus that of the checkpoint the validator picks; top-k = mean target mIoU of the validator's k
  best checkpoints of the trial. Rank correlations pool every trial's evaluations after subtracting each
  trial's mean (of the validator and of the target), so they measure agreement within trials, not between
  them.
* configuration level (across trials): which configuration (variant and searched values) to keep, every trial
  at its last checkpoint so that checkpoint selection plays no part. A configuration's value is the mean over
  its seeds; regret = the best configuration's target mIoU minus the chosen one's, also chosen within each
  seed alone (worst case over seeds).
* variant level (across the configurations of each variant): which configuration each variant keeps, the
  decision a tuning experiment makes before a confirmation. Per variant with two configurations or more, at
  the checkpoints the study's metric selected (as the tuning scores them) and means over seeds: regret = the
  variant's best configuration's target mIoU minus that of the one the validator picks; mean and worst over
  those variants. Rank correlations pool the configurations after subtracting each variant's mean, so they
  measure agreement within variants.

Correlations are signed so that positive means the validator, in its own direction, orders as the target does.
The weighted Spearman follows powerful-benchmarker (Musgrave et al., "Three New Validators and a Large-Scale
Benchmark Ranking for Unsupervised Domain Adaptation", 2022) in spirit: each point is weighted by its
validator rank, scaled to (0, 1] (dense ranks, best = 1) and squared, so that disagreement among the points
the validator ranks highest, the ones that would be picked, costs most; we then take the weighted Pearson
correlation of the plain (average) ranks. Confidence intervals are percentile bootstraps over the points of
each correlation (evaluations at the checkpoint level, configurations at the configuration level).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from msl.objectives import STUDY_VALIDATORS, oriented
from msl.probs_maps import load_probs, saved_iterations
from study import layout
from study.decide import TARGET
from study.results import ExperimentResults

TOP_K = (3, 5)
WEIGHT_POWER = 2
RESAMPLES = 1000


# --- study-level validators --------------------------------------------------------------------------------


def run_dir(exp: ExperimentResults, trial_name: str):
    return layout.row_run_dir(exp.study_path, exp.name, trial_name)


def ensemble_agreement(maps: dict) -> dict:
    """{key: EnsV score} for {key: (N, C, h, w) softmax maps path} of the candidate checkpoints."""
    total, shape = None, None
    for path in maps.values():
        probs = load_probs(path)  # (N, C, h, w)
        if shape is not None and probs.shape != shape:
            raise ValueError(
                f"{path}: maps of shape {probs.shape}, other checkpoints of the experiment have {shape}; "
                "every trial of an experiment must use the same validator images and eval.probs_size"
            )
        shape = probs.shape
        total = probs if total is None else total + probs
    if total is None:
        return {}
    ensemble = total.argmax(axis=1)  # (N, h, w)
    return {key: float((load_probs(path).argmax(axis=1) == ensemble).mean()) for key, path in maps.items()}


def seed_disagreement(predictions: list[np.ndarray]) -> float:
    """Mean over pairs of the fraction of pixels where two (N, h, w) argmax maps differ (NaN for fewer than
    2)."""
    pairs = [float((a != b).mean()) for a, b in itertools.combinations(predictions, 2)]
    return float(np.mean(pairs)) if pairs else math.nan


def study_validators(exp: ExperimentResults) -> pd.DataFrame:
    """One row per evaluation with saved maps: trial_name, iteration and each STUDY_VALIDATORS value."""
    columns = ["trial_name", "iteration", *STUDY_VALIDATORS]
    if exp.study_path is None:
        return pd.DataFrame(columns=columns)
    trials = exp.trials[~exp.trials["status"].isin(layout.FAILED_STATUSES)]
    maps = {
        (trial, iteration): path
        for trial in trials["trial_name"]
        for iteration, path in saved_iterations(run_dir(exp, trial)).items()
    }
    agreement = ensemble_agreement(maps)
    argmax = {key: load_probs(path).argmax(axis=1) for key, path in maps.items()}  # (N, h, w) each
    group_of = {row.trial_name: (row.variant, row.config) for row in trials.itertuples()}
    members: dict[tuple, list[str]] = {}  # configuration -> its trials: no scan of every trial per checkpoint
    for trial, group in group_of.items():
        members.setdefault(group, []).append(trial)
    seed_of = dict(zip(trials["trial_name"], trials["seed"], strict=True))
    rows = []
    for (trial, iteration), prediction in argmax.items():
        others = [
            argmax[other, iteration]
            for other in members[group_of[trial]]
            if seed_of[other] != seed_of[trial] and (other, iteration) in argmax
        ]
        disagreement = (
            np.mean([seed_disagreement([prediction, other]) for other in others]) if others else math.nan
        )
        rows.append(
            {
                "trial_name": trial,
                "iteration": iteration,
                "ensemble_agreement": agreement[trial, iteration],
                "seed_disagreement": disagreement,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def with_study_validators(exp: ExperimentResults) -> pd.DataFrame:
    """The experiment's evaluations with the STUDY_VALIDATORS columns (NaN where no maps were saved)."""
    extra = study_validators(exp)
    evals = exp.evals.drop(columns=[c for c in STUDY_VALIDATORS if c in exp.evals])
    if extra.empty:
        return evals.assign(**dict.fromkeys(STUDY_VALIDATORS, math.nan))
    merged = evals.merge(extra, on=["trial_name", "iteration"], how="left")
    merged.index = evals.index
    return merged


# --- correlations ------------------------------------------------------------------------------------------


def _pearson_rows(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlation of each row of x and y (R, n) with weights w (R, n); NaN for a constant
    row."""
    w = w / w.sum(axis=1, keepdims=True)
    xc = x - (w * x).sum(axis=1, keepdims=True)
    yc = y - (w * y).sum(axis=1, keepdims=True)
    denominator = np.sqrt((w * xc * xc).sum(axis=1) * (w * yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 1e-12, (w * xc * yc).sum(axis=1) / denominator, np.nan)


def _correlations(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman and weighted Spearman of each row (R, n) of validator x (higher is better) and target y."""
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    dense = stats.rankdata(x, axis=1, method="dense")
    weights = (dense / dense.max(axis=1, keepdims=True)) ** WEIGHT_POWER
    return _pearson_rows(rx, ry, np.ones_like(rx)), _pearson_rows(rx, ry, weights)


def rank_correlations(validator, target, *, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float]:
    """Spearman and weighted Spearman of validator (higher is better) and target, each with a 95% percentile
    bootstrap interval over the points; NaN with fewer than 3 points or a constant series. The points are
    resampled in value order, so that the interval does not depend on the order they come in (a study's rows
    follow its trials' random names)."""
    x, y = np.asarray(validator, dtype=float), np.asarray(target, dtype=float)
    order = np.lexsort((y, x))  # by validator, then target
    x, y = x[order], y[order]
    result = dict.fromkeys(
        ["spearman", "spearman_low", "spearman_high", "weighted_spearman", "weighted_low", "weighted_high"],
        math.nan,
    ) | {"n": len(x)}
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return result
    (spearman,), (weighted,) = _correlations(x[None], y[None])
    index = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))  # (R, n)
    boot_spearman, boot_weighted = _correlations(x[index], y[index])
    result.update(spearman=spearman, weighted_spearman=weighted)
    for name, values in (("spearman", boot_spearman), ("weighted", boot_weighted)):
        values = values[~np.isnan(values)]
        if len(values):
            result[f"{name}_low"], result[f"{name}_high"] = np.percentile(values, [2.5, 97.5])
    return result


# --- the audit ---------------------------------------------------------------------------------------------


def _top(frame: pd.DataFrame, k: int) -> float:
    """Mean target of the k rows best by `score` (stable: earlier rows first on ties)."""
    return frame.sort_values("score", ascending=False, kind="stable")[TARGET].head(k).mean()


def checkpoint_audit(evals: pd.DataFrame, validator: str, mode: str) -> dict[str, float]:
    """Within trials: mean and worst regret over trials, mean top-k target mIoU, correlations of the
    within-trial deviations (see the module docstring). `evals` needs trial_name, iteration, TARGET,
    validator."""
    frame = evals[["trial_name", "iteration", TARGET]].assign(score=oriented(evals[validator], mode)).dropna()
    frame = frame.sort_values(["trial_name", "iteration"], kind="stable")
    trials = frame.groupby("trial_name", sort=False)
    # Each trial's rows best score first (earlier iterations first on ties), in one sort for all trials.
    ranked = frame.sort_values("score", ascending=False, kind="stable").sort_values(
        "trial_name", kind="stable"
    )
    best_first = ranked.groupby("trial_name", sort=False)
    regrets = trials[TARGET].max() - best_first[TARGET].first()
    result = {
        "trials": trials.ngroups,
        "regret": regrets.mean() if len(regrets) else math.nan,
        "worst_regret": regrets.max() if len(regrets) else math.nan,
    }
    for k in TOP_K:
        top = best_first.head(k).groupby("trial_name", sort=False)[TARGET].mean()
        result[f"top{k}"] = top.mean() if len(regrets) else math.nan
    several = frame[trials["iteration"].transform("size") > 1]
    deviations = several[["score", TARGET]] - several.groupby("trial_name")[["score", TARGET]].transform(
        "mean"
    )
    return result | rank_correlations(deviations["score"], deviations[TARGET])


def last_checkpoints(evals: pd.DataFrame) -> pd.DataFrame:
    """Each trial's last evaluation."""
    return evals.sort_values("iteration", kind="stable").groupby("trial_name", sort=False).tail(1)


def configuration_audit(evals: pd.DataFrame, validator: str, mode: str) -> dict[str, float]:
    """Across trials, every trial at its last checkpoint: a configuration (variant, config) scores the mean
    over its seeds. Regret of the configuration chosen on that mean, worst regret over seeds when choosing
    within each seed, top-k target mIoU of the k best configurations, correlations over configurations."""
    last = last_checkpoints(evals)
    frame = last[["variant", "config", "seed", TARGET]].assign(score=oriented(last[validator], mode)).dropna()
    configs = frame.groupby(["variant", "config"], sort=False)[["score", TARGET]].mean()
    result = {"configurations": len(configs)}
    if configs.empty:
        return (
            result
            | {"regret": math.nan, "worst_regret": math.nan}
            | {f"top{k}": math.nan for k in TOP_K}
            | rank_correlations([], [])
        )
    result["regret"] = configs[TARGET].max() - configs.at[configs["score"].idxmax(), TARGET]
    per_seed = [
        seed_frame[TARGET].max() - seed_frame.at[seed_frame["score"].idxmax(), TARGET]
        for _, seed_frame in frame.reset_index(drop=True).groupby("seed")
    ]
    result["worst_regret"] = max(per_seed)
    result.update({f"top{k}": _top(configs, k) for k in TOP_K})
    return result | rank_correlations(configs["score"], configs[TARGET])


def variant_audit(checkpoints: pd.DataFrame, validator: str, mode: str) -> dict:
    """Within variants, each configuration at its mean over seeds of `checkpoints` (one evaluation per trial:
    those the study's metric selected, `study.decide.Selection.checkpoints`, as a tuning scores them): mean
    and worst regret over the variants that have two configurations or more, their number, each one's pick
    (`picks`: variant -> config) and correlations of the within-variant deviations (see the module
    docstring)."""
    frame = checkpoints[["variant", "config", TARGET]].assign(score=oriented(checkpoints[validator], mode))
    frame = frame.dropna()
    configs = frame.groupby(["variant", "config"], sort=False)[["score", TARGET]].mean().reset_index()
    configs = configs[configs.groupby("variant")["config"].transform("size") > 1]
    variants = configs.groupby("variant", sort=False)
    picks = configs.loc[variants["score"].idxmax()].set_index("variant")  # first best on ties
    regrets = variants[TARGET].max() - picks[TARGET]
    deviations = configs[["score", TARGET]] - variants[["score", TARGET]].transform("mean")
    return {
        "variants": len(picks),
        "regret": regrets.mean() if len(regrets) else math.nan,
        "worst_regret": regrets.max() if len(regrets) else math.nan,
        "picks": picks["config"].to_dict(),
    } | rank_correlations(deviations["score"], deviations[TARGET])
