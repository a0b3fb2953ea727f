"""Tune, then confirm: the configurations a confirmation takes from the tuning, and what the report says of
them.

A fake study written through `study.layout`: `tune` (seed 0; source_only, and maxsquare at three values of
lambda_target, objective target_max_square) and `confirm` (seeds 1-3; source_only, adabn and maxsquare).
Expectations are computed here from the numbers the fixture wrote, with scipy, not through the report.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from scipy import stats

from study import layout
from study.decide import confirmed_configurations
from study.report import build_report
from study.space import Experiment, Variant
from tests import fakes
from tests.fakes import ITERATIONS

# lambda_target: (target_max_square objective at each evaluation, target mIoU at each evaluation)
TUNED = {
    0.1: ((0.70, 0.72, 0.71), (0.40, 0.41, 0.41)),
    0.3: ((0.74, 0.80, 0.78), (0.44, 0.47, 0.46)),  # the objective's pick: best max-square 0.80 at it. 20
    1.0: ((0.79, 0.77, 0.75), (0.50, 0.49, 0.48)),
}  # the oracle's pick, which a label-free tuning must not make
TUNE_BASELINE = 0.38
CONFIRMED = {"source_only": (0.36, 0.38, 0.37), "adabn": (0.39, 0.40, 0.41), "maxsquare": (0.42, 0.45, 0.41)}


def _experiment(name: str, confirm: str | None) -> Experiment:
    variants = {variant: Variant({}) for variant in ("source_only", "adabn", "maxsquare")}
    return Experiment(name, seeds=[1, 2, 3], variants=variants, metric="target_max_square", confirm=confirm)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    study = tmp_path_factory.mktemp("study") / "tune_confirm"
    layout.write_json(study / layout.STUDY_FILE, {"name": "tc", "experiments": ["tune", "confirm"]})
    searched = {"loss.lambda_target": {"grid": list(TUNED)}}
    layout.write_plan(
        study,
        fakes.plan(
            "tune",
            metric="target_max_square",
            mode="max",
            variants=["source_only", "maxsquare"],
            seeds=[0],
            searched=searched,
            scheduler="fifo",
            num_trials=4,
        ),
    )
    fakes.write_trial(
        study,
        "tune",
        "source_only_s0",
        variant="source_only",
        seed=0,
        params={},
        status=fakes.finished(),
        records=[fakes.record(it, TUNE_BASELINE, 0.6, 0.6) for it in ITERATIONS],
    )
    for lambda_target, (objective, miou) in TUNED.items():
        records = [fakes.record(it, m, 0.6, o) for it, m, o in zip(ITERATIONS, miou, objective, strict=True)]
        fakes.write_trial(
            study,
            "tune",
            f"maxsquare_{lambda_target}",
            variant="maxsquare",
            seed=0,
            params={"loss": {"lambda_target": lambda_target}},
            status=fakes.finished(),
            records=records,
        )
    return study


def _confirm_plan(study, selected: dict, trials: bool = True) -> None:
    plan = fakes.plan(
        "confirm",
        metric="target_max_square",
        mode="max",
        variants=list(CONFIRMED),
        seeds=[1, 2, 3],
        searched={},
        scheduler="fifo",
        num_trials=9,
        confirm={"from": "tune", "selected": selected},
    )
    layout.write_plan(study, plan)
    for variant, values in CONFIRMED.items() if trials else ():
        for seed, value in zip((1, 2, 3), values, strict=True):
            fakes.write_trial(
                study,
                "confirm",
                f"{variant}_s{seed}",
                variant=variant,
                seed=seed,
                params=selected.get(variant, {}),
                status=fakes.finished(),
                records=[fakes.record(it, value, 0.6, 0.7) for it in ITERATIONS],
            )


def test_the_tunings_label_free_pick_is_confirmed_not_the_oracles(study):
    selected = confirmed_configurations(study, _experiment("confirm", "tune"))
    assert selected == {"maxsquare": {"loss.lambda_target": 0.3}}  # source_only was not searched: no entry
    assert type(selected["maxsquare"]["loss.lambda_target"]) is float  # plain values for YAML and JSON


def test_a_resumed_study_confirms_what_its_plan_recorded(study):
    _confirm_plan(study, {"maxsquare": {"loss.lambda_target": 1.0}}, trials=False)
    selected = confirmed_configurations(study, _experiment("confirm", "tune"))
    assert selected == {"maxsquare": {"loss.lambda_target": 1.0}}
    assert confirmed_configurations(study, _experiment("tune", None)) == {}


def test_report_shows_the_configuration_the_margin_kept_and_the_change_against_adabn(study):
    _confirm_plan(study, {"maxsquare": {"loss.lambda_target": 0.3}})
    path = build_report(study)
    text = path.read_text()
    confirmation = pd.read_csv(path.parent / "tables" / "confirmation_confirm.csv")
    (row,) = confirmation.to_dict("records")
    tuning_change = 100 * (TUNED[0.3][1][1] - TUNE_BASELINE)  # the objective's checkpoint: iteration 20
    confirmed = pd.Series(CONFIRMED["maxsquare"]) - pd.Series(CONFIRMED["source_only"])
    assert row["variant"] == "maxsquare" and row["config"] == "lambda_target=0.3"
    assert row["tuning_change"] == pytest.approx(tuning_change)
    assert row["confirmed_change"] == pytest.approx(100 * confirmed.mean())
    assert row["kept"] == pytest.approx(100 * confirmed.mean() / tuning_change)
    assert row["confirmed_p_value"] == pytest.approx(
        stats.ttest_rel(CONFIRMED["maxsquare"], CONFIRMED["source_only"]).pvalue
    )
    assert "Tune, then confirm" in text and f" {100 * row['kept']:.0f}% |" in text

    variants = pd.read_csv(path.parent / "tables" / "variants_confirm.csv").set_index("variant")
    against_adabn = stats.ttest_rel(CONFIRMED["maxsquare"], CONFIRMED["adabn"])
    assert variants.loc["maxsquare", "adabn_change"] == pytest.approx(
        100 * (pd.Series(CONFIRMED["maxsquare"]) - pd.Series(CONFIRMED["adabn"])).mean()
    )
    assert variants.loc["maxsquare", "adabn_p_value"] == pytest.approx(against_adabn.pvalue)
    assert pd.isna(variants.loc["adabn", "adabn_change"]) and pd.isna(
        variants.loc["source_only", "adabn_change"]
    )
    assert variants.loc["maxsquare", "config"] == "lambda_target=0.3"
    assert variants.loc["source_only", "config"] == "fixed"
    assert "change vs adabn" in text and "never took part in that selection" in text


def test_a_tunings_choose_by_decides_what_is_confirmed(study, tmp_path):
    """With `choose_by` in the tuning's plan, its values at the checkpoints the objective selected choose
    (here the oracle, named on purpose: 1.0 has the best target mIoU at its selected checkpoint)."""
    copy = tmp_path / "tc"
    copy.mkdir()
    layout.write_json(copy / layout.STUDY_FILE, {"name": "tc", "experiments": ["tune"]})
    plan = layout.read_plan(study, "tune")
    plan.choose_by = "oracle_miou"
    layout.write_plan(copy, plan)
    trials = layout.trials_dir(study, "tune")
    for trial in trials.iterdir():
        shutil.copytree(trial, layout.trials_dir(copy, "tune") / trial.name)
    selected = confirmed_configurations(copy, _experiment("confirm", "tune"))
    assert selected == {"maxsquare": {"loss.lambda_target": 1.0}}
