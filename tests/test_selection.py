"""study/selection.py against independent computations: the study-level validators from the saved softmax
maps (numpy loops), rank correlations and their bootstrap intervals (scipy, numpy's weighted covariance, a
resampling loop), and the checkpoint, configuration and variant audits (loops over trials, with many ties)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from msl.probs_maps import save_probs
from study import layout
from study.decide import TARGET, select
from study.results import load_study
from study.selection import (
    TOP_K,
    checkpoint_audit,
    configuration_audit,
    last_checkpoints,
    rank_correlations,
    variant_audit,
    with_study_validators,
)
from tests import fakes
from tests.fakes import ITERATIONS

# --- rank correlations -------------------------------------------------------------------------------------


def _weighted_spearman(validator, target) -> float:
    """powerful-benchmarker's weighting, written out: weights (dense rank / max dense rank)^2, then the
    weighted Pearson correlation (numpy's weighted covariance) of the average ranks."""
    dense = stats.rankdata(validator, method="dense")
    weights = (dense / dense.max()) ** 2
    covariance = np.cov(stats.rankdata(validator), stats.rankdata(target), aweights=weights)
    return covariance[0, 1] / np.sqrt(covariance[0, 0] * covariance[1, 1])


def test_weighted_spearman_counts_disagreement_among_the_top_ranked_most():
    validator = [1.0, 2.0, 3.0, 4.0, 5.0]
    top_swapped, bottom_swapped = [1, 2, 3, 5, 4], [2, 1, 3, 4, 5]
    top, bottom = rank_correlations(validator, top_swapped), rank_correlations(validator, bottom_swapped)
    assert top["spearman"] == pytest.approx(stats.spearmanr(validator, top_swapped).statistic)
    assert top["spearman"] == pytest.approx(bottom["spearman"])  # the plain Spearman cannot tell them apart
    assert top["weighted_spearman"] == pytest.approx(_weighted_spearman(validator, top_swapped))
    assert top["weighted_spearman"] < bottom["weighted_spearman"]


def test_bootstrap_interval_matches_a_naive_resampling_loop():
    rng = np.random.default_rng(7)
    validator, target = rng.normal(size=12), rng.normal(size=12)
    result = rank_correlations(validator, target, resamples=200, seed=3)
    order = np.lexsort((target, validator))  # the points are resampled in value order
    validator, target = validator[order], target[order]
    draws = np.random.default_rng(3).integers(0, 12, size=(200, 12))
    plain, weighted = [], []
    for index in draws:
        x, y = validator[index], target[index]
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            plain.append(stats.spearmanr(x, y).statistic)
            weighted.append(_weighted_spearman(x, y))
    assert [result["spearman_low"], result["spearman_high"]] == pytest.approx(
        np.percentile(plain, [2.5, 97.5])
    )
    assert [result["weighted_low"], result["weighted_high"]] == pytest.approx(
        np.percentile(weighted, [2.5, 97.5])
    )
    assert result["spearman_low"] < result["spearman"] < result["spearman_high"]


def test_the_bootstrap_interval_does_not_depend_on_the_order_of_the_points():
    """Two runs of one study list the same evaluations in different orders (trial names are random)."""
    rng = np.random.default_rng(5)
    validator, target = rng.normal(size=15), rng.normal(size=15)
    shuffled = rng.permutation(15)
    assert rank_correlations(validator[shuffled], target[shuffled]) == rank_correlations(validator, target)


def test_too_few_points_or_a_constant_series_have_no_correlation():
    assert np.isnan(rank_correlations([1.0, 2.0], [1.0, 2.0])["spearman"])
    assert np.isnan(rank_correlations([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["weighted_spearman"])
    assert rank_correlations([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["n"] == 3


# --- the checkpoint audit, vectorised, against a loop over trials -------------------------------------------


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


def naive_variant_audit(evals: pd.DataFrame, validator: str, mode: str) -> dict:
    """Per variant: each configuration's mean over seeds of its trials' last evaluations, the first
    configuration (in row order) with the best score, its regret; over variants with 2+ configurations."""
    regrets, picks = {}, {}
    for variant in dict.fromkeys(evals["variant"]):
        means = {}
        for config in dict.fromkeys(evals.loc[evals["variant"] == variant, "config"]):
            rows = evals[(evals["variant"] == variant) & (evals["config"] == config)]
            lasts = [trial.loc[trial["iteration"].idxmax()] for _, trial in rows.groupby("trial_name")]
            score = np.mean([last[validator] for last in lasts]) * (1 if mode == "max" else -1)
            means[config] = (score, np.mean([last[TARGET] for last in lasts]))
        if len(means) < 2:
            continue
        picks[variant] = max(means, key=lambda config: means[config][0])  # max keeps the first of ties
        regrets[variant] = max(target for _, target in means.values()) - means[picks[variant]][1]
    return {"picks": picks, "regret": np.mean(list(regrets.values())), "worst": max(regrets.values())}


@pytest.mark.parametrize("mode", ["max", "min"])
def test_variant_audit_matches_a_loop_over_variants(mode):
    rng = np.random.default_rng(5)
    shapes = {"source_only": 1, "entropy": 5, "maxsquare": 3, "hard": 2}  # configurations per variant
    rows = [
        {
            "trial_name": f"{variant}_c{config}_s{seed}",
            "variant": variant,
            "config": f"lambda={config}",
            "seed": seed,
            "iteration": iteration,
            "v": float(rng.integers(0, 3)),  # few values: ties between configurations
            TARGET: float(rng.uniform()),
        }
        for variant, configs in shapes.items()
        for config in range(configs)
        for seed in range(2)
        for iteration in rng.permutation([10, 20, 30])  # shuffled: the last is not the last row
    ]
    evals = pd.DataFrame(rows)
    audit = variant_audit(last_checkpoints(evals), "v", mode)
    expected = naive_variant_audit(evals, "v", mode)
    assert audit["variants"] == 3  # source_only has one configuration: nothing to choose
    assert audit["picks"] == expected["picks"]
    assert audit["regret"] == pytest.approx(expected["regret"])
    assert audit["worst_regret"] == pytest.approx(expected["worst"])
    assert audit["n"] == 5 + 3 + 2


def test_variant_audit_correlates_within_variants_not_between():
    """Two variants far apart in both validator and target, each ordered against the target inside: the
    pooled order would agree, the within-variant one does not."""
    rows = [
        {"trial_name": f"{variant}{c}", "variant": variant, "config": str(c), "seed": 0, "iteration": 30}
        | {"v": base + c, TARGET: base - c}
        for variant, base in (("a", 0.0), ("b", 10.0))
        for c in range(3)
    ]
    audit = variant_audit(pd.DataFrame(rows), "v", "max")
    assert audit["spearman"] == pytest.approx(-1.0)
    assert audit["regret"] == pytest.approx(2.0)  # each variant picks c = 2, its worst


# --- a study's study-level validators and audits -----------------------------------------------------------

VARIANTS = ("source_only", "maxsquare", "iw_maxsquare")
SEEDS = (0, 1, 2)
ERRORED = ("iw_maxsquare", 2)  # raised before its first evaluation: no metrics, no maps


def _probs_map(variant: str, seed: int, iteration: int) -> np.ndarray:
    """The saved validator softmax maps of one evaluation: 2 images, 3 classes, 1 x 2 pixels."""
    rng = np.random.default_rng([VARIANTS.index(variant), seed, iteration])
    return rng.dirichlet(np.ones(3), size=(2, 1, 2)).transpose(0, 3, 1, 2).astype(np.float16)  # (2, 3, 1, 2)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study of one experiment, 3 variants x 3 seeds of 3 evaluations with saved maps (one trial errored),
    and the records written per (variant, seed)."""
    study = tmp_path_factory.mktemp("study") / "fake"
    fakes.study_file(study, ["variants"])
    plan = fakes.plan(
        "variants",
        metric="source_val_miou",
        mode="max",
        variants=list(VARIANTS),
        seeds=list(SEEDS),
        searched={},
        scheduler="fifo",
        num_trials=9,
    )
    layout.write_plan(study, plan)
    rng = np.random.default_rng(0)
    written = {}
    for variant in VARIANTS:
        for seed in SEEDS:
            name = f"{variant}_seed{seed}"
            if (variant, seed) == ERRORED:
                error = {"status": "error", "iterations": 5, "error": "NonFiniteLossError", "reason": "error"}
                fakes.write_trial(
                    study, "variants", name, variant=variant, seed=seed, params={}, status=error, records=[]
                )
                continue
            records = [
                fakes.record(it, *np.round(rng.uniform([0.3, 0.5, 0.5], [0.5, 0.7, 0.9]), 6).tolist())
                for it in ITERATIONS
            ]
            fakes.write_trial(
                study,
                "variants",
                name,
                variant=variant,
                seed=seed,
                params={},
                status=fakes.finished(),
                records=records,
            )
            for record in records:
                run = layout.trials_dir(study, "variants") / name / layout.RUN_DIR
                save_probs(run, record["iteration"], _probs_map(variant, seed, record["iteration"]))
            written[variant, seed] = records
    return study, written


@pytest.fixture(scope="module")
def evals(study):
    return with_study_validators(load_study(study[0]).experiment("variants"))


def test_study_validators_match_loops_over_the_saved_maps(study, evals):
    _, written = study
    keys = [(variant, seed, r["iteration"]) for (variant, seed), records in written.items() for r in records]
    argmax = {key: _probs_map(*key).astype(np.float32).argmax(axis=1) for key in keys}  # (2, 1, 2) each
    ensemble = sum(_probs_map(*key).astype(np.float32) for key in keys).argmax(axis=1)
    found = evals.set_index(["variant", "seed", "iteration"])
    assert len(found) == len(keys) == 8 * len(ITERATIONS)
    for variant, seed, iteration in keys:
        agreement = np.mean(
            [argmax[variant, seed, iteration].flat[i] == ensemble.flat[i] for i in range(ensemble.size)]
        )
        others = [k for k in keys if k[0] == variant and k[2] == iteration and k[1] != seed]
        disagreement = np.mean(
            [np.mean(argmax[variant, seed, iteration] != argmax[other]) for other in others]
        )
        row = found.loc[variant, seed, iteration]
        assert row["ensemble_agreement"] == pytest.approx(agreement)
        assert row["seed_disagreement"] == pytest.approx(disagreement)


def _pick(records: list[dict], score) -> dict:
    """The record with the best score, the earliest on ties."""
    scores = [score(r) for r in records]
    return records[scores.index(max(scores))]


@pytest.mark.parametrize(
    ("validator", "mode"),
    [("target_max_square", "max"), ("ensemble_agreement", "max"), ("seed_disagreement", "min")],
)
def test_checkpoint_audit_of_a_study_regret_top_k_and_within_trial_correlations(
    study, evals, validator, mode
):
    _, written = study
    value = evals.set_index(["variant", "seed", "iteration"])[validator]

    def score(variant, seed):
        sign = 1 if mode == "max" else -1
        return lambda r: sign * value[variant, seed, r["iteration"]]

    regrets = [
        max(r["oracle_miou"] for r in records) - _pick(records, score(*trial))["oracle_miou"]
        for trial, records in written.items()
    ]
    deviations = []
    for trial, records in written.items():
        scores = [score(*trial)(r) for r in records]
        oracle = [r["oracle_miou"] for r in records]
        deviations += zip(
            np.subtract(scores, np.mean(scores)), np.subtract(oracle, np.mean(oracle)), strict=True
        )
    x, y = zip(*deviations, strict=True)
    audit = checkpoint_audit(evals, validator, mode)
    assert audit["regret"] == pytest.approx(np.mean(regrets))
    assert audit["worst_regret"] == pytest.approx(max(regrets))
    assert audit["top3"] == pytest.approx(np.mean([r["oracle_miou"] for rs in written.values() for r in rs]))
    assert audit["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert audit["weighted_spearman"] == pytest.approx(_weighted_spearman(x, y))
    assert audit["n"] == len(deviations) == 8 * len(ITERATIONS)


def test_the_last_checkpoint_and_the_oracle_are_the_audits_reference_rows(study, evals):
    _, written = study
    last = [
        max(r["oracle_miou"] for r in records) - records[-1]["oracle_miou"] for records in written.values()
    ]
    assert checkpoint_audit(evals, "iteration", "max")["regret"] == pytest.approx(np.mean(last))
    assert checkpoint_audit(evals, TARGET, "max")["regret"] == 0


def test_configuration_audit_at_the_last_checkpoints(study, evals):
    _, written = study
    means = {
        variant: [
            np.mean([records[-1][key] for (v, _), records in written.items() if v == variant])
            for key in ("target_max_square", "oracle_miou")
        ]
        for variant in VARIANTS
    }
    square, oracle = zip(*means.values(), strict=True)
    picked = max(means, key=lambda variant: means[variant][0])
    per_seed = []
    for seed in SEEDS:
        finals = [records[-1] for (_, s), records in written.items() if s == seed]
        chosen = max(finals, key=lambda r: r["target_max_square"])
        per_seed.append(max(r["oracle_miou"] for r in finals) - chosen["oracle_miou"])
    audit = configuration_audit(evals, "target_max_square", "max")
    assert audit["configurations"] == len(VARIANTS)
    assert audit["regret"] == pytest.approx(max(oracle) - means[picked][1])
    assert audit["worst_regret"] == pytest.approx(max(per_seed))
    assert audit["top3"] == pytest.approx(np.mean(oracle))  # 3 configurations
    assert audit["spearman"] == pytest.approx(stats.spearmanr(square, oracle).statistic)


def test_a_study_level_choose_by_is_computed_from_the_saved_maps_at_the_selected_checkpoints(study, evals):
    """study.decide imports study.selection only for a study-level `choose_by`; the values it chooses with are
    those of `with_study_validators` at the checkpoints the objective selected."""
    exp = load_study(study[0]).experiment("variants")
    exp.plan.choose_by = "seed_disagreement"
    selection = select(exp)
    assert selection.chooser == "seed_disagreement"
    picks = selection.picks.dropna(subset=["selected_row"])
    expected = evals.loc[picks["selected_row"].astype(int), "seed_disagreement"].to_numpy()
    assert picks["choice"].to_numpy() == pytest.approx(expected)
    assert not picks["choice"].isna().any()
