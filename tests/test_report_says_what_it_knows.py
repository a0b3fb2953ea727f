"""The report says what it knows and what it cannot (#25 point 5, #20 point 5), on a fake study made for it:
two seeds, one evaluation per trial, source_only fixed and maxsquare searching its own grid of
loss.lambda_target, whose best value is the top of the grid. Expectations are computed here from the numbers
written, with scipy's t distribution where an interval is involved."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study import layout
from study.report import _headline_words, build_report
from tests import fakes

SEEDS = (0, 1)
SOURCE_ONLY = {0: 0.30, 1: 0.34}
MAXSQUARE = {0.1: {0: 0.31, 1: 0.33}, 1.0: {0: 0.33, 1: 0.37}, 3.0: {0: 0.36, 1: 0.52}}


def _trial(study, name, variant, seed, params, value):
    record = fakes.record(30, value, value, 0.7)  # one evaluation, at the end; the objective equals mIoU
    fakes.write_trial(
        study,
        "tune",
        name,
        variant=variant,
        seed=seed,
        params=params,
        status=fakes.finished(),
        records=[record],
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
    study = tmp_path_factory.mktemp("honest") / "honest"
    layout.write_json(study / layout.STUDY_FILE, {"name": "honest", "experiments": ["tune"]})
    searched = {"loss.lambda_target": {"grid per variant": {"maxsquare": [0.1, 1.0, 3.0]}}}
    plan = fakes.plan(
        "tune",
        metric="source_val_miou",
        mode="max",
        variants=["source_only", "maxsquare"],
        seeds=list(SEEDS),
        searched=searched,
        scheduler="fifo",
        num_trials=8,
    )
    layout.write_plan(study, plan)
    for seed in SEEDS:
        _trial(study, f"source_only_s{seed}", "source_only", seed, {}, SOURCE_ONLY[seed])
        for lam, values in MAXSQUARE.items():
            _trial(
                study,
                f"maxsquare_{lam}_s{seed}",
                "maxsquare",
                seed,
                {"loss.lambda_target": lam},
                values[seed],
            )
    return build_report(study).read_text()


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}")[1].split("\n## ")[0]


def test_the_report_opens_with_a_headline_computed_from_its_tables(report):
    differences = np.array([MAXSQUARE[3.0][s] - SOURCE_ONLY[s] for s in SEEDS])
    p = stats.ttest_rel([MAXSQUARE[3.0][s] for s in SEEDS], [SOURCE_ONLY[s] for s in SEEDS]).pvalue
    assert p > 0.05
    headline = report.split("## 1.")[0]
    assert "**Headline.**" in headline
    assert (
        f"Experiment `tune`: no variant differs from source_only at p < 0.05; the best, maxsquare "
        f"(lambda_target=3), is {100 * differences.mean():+.1f} mIoU against it (p = {p:.3f}, 2 seeds)."
    ) in headline


def test_an_interval_from_two_seeds_is_said_to_say_little_and_stays_inside_0_100(report):
    section = _section(report, "1. Variant comparison")
    values = [MAXSQUARE[3.0][s] for s in SEEDS]
    half = stats.t.ppf(0.975, 1) * np.std(values, ddof=1) / np.sqrt(2)
    assert 100 * (np.mean(values) + half) > 100  # the t-interval itself leaves what mIoU can be
    intervals = re.findall(r"\[(-?\d+\.\d), (-?\d+\.\d)\]", section)
    assert intervals and all(0 <= float(a) <= float(b) <= 100 for a, b in intervals)
    assert "clipped to 0–100" in section
    assert "with 2 seeds a 95% Student-t interval is ±12.7 standard errors wide" in section


def test_a_selected_value_on_the_edge_of_its_grid_is_marked_and_named(report):
    section = _section(report, "1. Variant comparison")
    assert "| maxsquare   | lambda_target=3 (top of grid) |" in section
    assert (
        "At the edge of what was searched: maxsquare's loss.lambda_target = 3 is the largest value of its "
        "grid [0.1, 1, 3]"
    ) in section


def test_no_nan_row_for_a_variant_that_was_not_searched(report):
    section = _section(report, "3. Hyperparameter sensitivity")
    assert "nan" not in section.lower()
    assert "source_only did not search loss.lambda_target" in section


def test_tables_and_plots_with_nothing_to_compare_become_one_sentence(report):
    selection = _section(report, "4. Label-free model selection")
    assert "**Checkpoint level**" not in selection and "selection_checkpoints_tune" not in selection
    assert (
        "Checkpoint level: every trial was evaluated once, so there is no checkpoint to choose" in selection
    )
    curves = _section(report, "6. Learning curves")
    assert "curves_tune.png" not in curves
    assert "Every trial was evaluated once (at iteration 30): there is no curve to draw" in curves


def _row(variant, config, mean, change=None, p=None, low=None, high=None, pairs=3):
    return {
        "variant": variant,
        "config": config,
        "mean": mean,
        "change": change,
        "p_value": p,
        "change_ci_low": low,
        "change_ci_high": high,
        "n_pairs": pairs,
    }


def test_the_headline_names_a_difference_with_its_interval_and_a_baseline_that_stays_best():
    differences = np.array([0.04, 0.05, 0.06])
    p = stats.ttest_1samp(differences, 0).pvalue
    half = stats.t.ppf(0.975, 2) * differences.std(ddof=1) / np.sqrt(3)
    numbers = pd.DataFrame(
        [
            _row("source_only", "fixed", 30.0),
            _row("maxsquare", "lambda_target=1", 35.0, 5.0, p, 100 * (0.05 - half), 100 * (0.05 + half)),
            _row("entropy", "lambda_target=1", 28.0, -2.0, 0.01),
        ]
    )
    words = _headline_words(numbers, numbers.loc[1])
    assert words == (
        f"maxsquare (lambda_target=1) is best at 35.0 mIoU, +5.0 against source_only (95% t-interval "
        f"[{100 * (0.05 - half):+.1f}, {100 * (0.05 + half):+.1f}], p = {p:.3f}, 3 seeds); entropy differs "
        "from source_only at p < 0.05 (-2.0, p = 0.010)."
    )
    baseline_best = pd.DataFrame(
        [_row("source_only", "fixed", 30.0), _row("entropy", "default", 29.0, -1.0, 0.4)]
    )
    assert _headline_words(baseline_best, baseline_best.loc[0]) == (
        "source_only is best at 30.0 mIoU; no variant differs from source_only at p < 0.05."
    )


def test_the_headline_counts_one_seed_in_the_singular():
    from study.report import _headline_words

    numbers = pd.DataFrame(
        {
            "variant": ["source_only", "maxsquare"],
            "config": ["default", "lambda_target=3"],
            "mean": [45.0, 50.0],
            "change": [np.nan, 5.0],
            "p_value": [np.nan, np.nan],
            "n_pairs": [np.nan, 1.0],
        }
    )
    assert _headline_words(numbers, numbers.iloc[1]).endswith("(p = –, 1 seed).")
