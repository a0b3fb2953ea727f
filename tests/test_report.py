"""`msl-study report` on fake study directories written through `study.layout`, with known numbers.

Two experiments: `variants` (FIFO, label-free objective source_val_miou, 3 variants x 3 seeds, one trial
errored without metrics) and `sweep` (ASHA over two searched parameters, objective target_entropy: two
finished trials, one stopped, one running whose metrics.jsonl ends in a truncated line). Expectations are
computed here from the records the fixture wrote, with numpy and scipy, never through the report's own
helpers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from msl.probs_maps import save_probs
from msl.run_dir import RunDir
from study import layout
from study.compare import format_comparison
from study.decide import select, selected_checkpoints
from study.report import build_report, paper_benchmark
from study.report_cli import add_report_parser
from study.results import load_study
from study.selection import (
    checkpoint_audit,
    configuration_audit,
    last_checkpoints,
    variant_audit,
    with_study_validators,
)
from study.status import format_status, study_status
from tests import fakes
from tests.fakes import ITERATIONS

VARIANT_BASE = {"source_only": 0.35, "maxsquare": 0.42, "iw_maxsquare": 0.44}
ERROR_MESSAGE = (
    "Traceback (most recent call last):\nNonFiniteLossError: non-finite loss term 'target_loss' at 5"
)
SWEEP = {  # trial: (lambda_target, lr, status, oracle mIoU at each evaluation written)
    "sweep_0": (0.02, 1e-4, "finished", (0.30, 0.34, 0.36)),
    "sweep_1": (0.1, 2.5e-4, "finished", (0.33, 0.38, 0.37)),
    "sweep_2": (0.5, 1e-4, "stopped", (0.25,)),
    "sweep_3": (0.9, 2.5e-4, None, (0.31, 0.35)),  # running
}


def _probs_map(variant: str, seed: int, iteration: int) -> np.ndarray:
    """The saved validator softmax maps (2 images, 3 classes, 1 x 2 pixels) of one evaluation of
    `variants`."""
    rng = np.random.default_rng([list(VARIANT_BASE).index(variant), seed, iteration])
    return rng.dirichlet(np.ones(3), size=(2, 1, 2)).transpose(0, 3, 1, 2).astype(np.float16)  # (2, 3, 1, 2)


@pytest.fixture(scope="module")
def fake_study(tmp_path_factory):
    """The study directory and the records written per (experiment, trial)."""
    study = tmp_path_factory.mktemp("study") / "fake"
    layout.write_json(
        study / layout.STUDY_FILE,
        {
            "name": "fake",
            "created": "2025-01-01T00:00:00+00:00",
            "git_revision": "abc123",
            "versions": {},
            "experiments": ["variants", "sweep"],
        },
    )
    written: dict[tuple[str, str], list[dict]] = {}
    layout.write_plan(
        study,
        fakes.plan(
            "variants",
            metric="source_val_miou",
            mode="max",
            variants=list(VARIANT_BASE),
            seeds=[0, 1, 2],
            searched={},
            scheduler="fifo",
            num_trials=9,
        ),
    )
    noise = np.random.default_rng(0)
    for variant, base in VARIANT_BASE.items():
        for seed in (0, 1, 2):
            name = f"{variant}_seed{seed}"
            if (variant, seed) == ("iw_maxsquare", 2):
                fakes.write_trial(
                    study,
                    "variants",
                    name,
                    variant=variant,
                    seed=seed,
                    params={},
                    records=[],
                    status={
                        "status": "error",
                        "iterations": 5,
                        "error": ERROR_MESSAGE,
                        "reason": "raised an error (after its retries)",
                    },
                )
                continue
            # The target mIoU keeps rising while source val peaks at iteration 20: the objective's pick is
            # not the oracle-best checkpoint.
            records = [
                fakes.record(
                    it,
                    round(base + 0.01 * seed + gain + noise.uniform(0, 0.004), 6),
                    round(0.6 + peak + noise.uniform(0, 0.004), 6),
                    round(noise.uniform(0.5, 0.9), 6),
                )
                for it, gain, peak in zip(ITERATIONS, (0.0, 0.02, 0.04), (0.0, 0.05, 0.02), strict=True)
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
            written["variants", name] = records
            for record in records:
                save_probs(
                    layout.trials_dir(study, "variants") / name / layout.RUN_DIR,
                    record["iteration"],
                    _probs_map(variant, seed, record["iteration"]),
                )

    searched = {"loss.lambda_target": {"loguniform": [0.01, 1.0]}, "optim.lr": {"choice": [1e-4, 2.5e-4]}}
    layout.write_plan(
        study,
        fakes.plan(
            "sweep",
            metric="target_entropy",
            mode="min",
            variants=["maxsquare"],
            seeds=[0],
            searched=searched,
            scheduler="asha",
            num_trials=4,
        ),
    )
    for index, (name, (lambda_target, lr, status, oracles)) in enumerate(SWEEP.items()):
        records = [
            fakes.record(it, oracle, 0.6, 0.7) for it, oracle in zip(ITERATIONS, oracles, strict=False)
        ]
        status_json = None
        if status == "finished":
            status_json = fakes.finished()
        elif status == "stopped":
            status_json = {
                "status": "stopped",
                "iterations": 10,
                "error": None,
                "reason": "stopped by the asha scheduler at iteration 10 of 30",
            }
        truncated = '{"iteration": 30, "oracle_mi' if status is None else None
        fakes.write_trial(
            study,
            "sweep",
            name,
            variant="maxsquare",
            seed=0,
            status=status_json,
            records=records,
            params={"loss.lambda_target": lambda_target, "optim.lr": lr},
            truncated_line=truncated,
            started=1_000_000 + 10 * index,
        )
        written["sweep", name] = records
    return study, written


@pytest.fixture(scope="module")
def report(fake_study):
    study, written = fake_study
    path = build_report(study)
    tables = path.parent / "tables"
    return path, path.read_text(), {csv.stem: pd.read_csv(csv) for csv in tables.glob("*.csv")}, written


def _selected(records: list[dict], metric: str, mode: str) -> dict:
    """The record the objective picks: best value, the earliest on ties."""
    values = [r[metric] for r in records]
    return records[values.index(max(values) if mode == "max" else min(values))]


def _variant_values(written, variant: str, which: str) -> dict[int, float]:
    values = {}
    for (experiment, name), records in written.items():
        if experiment == "variants" and name.startswith(f"{variant}_seed"):
            record = _selected(records, "source_val_miou", "max") if which == "selected" else records[-1]
            values[int(name[-1])] = record["oracle_miou"]
    return values


def test_load_study_reads_every_trial_with_status_and_ignores_a_truncated_line(fake_study):
    study, written = fake_study
    results = load_study(study)
    trials = results.trials.set_index("trial_name")
    assert len(trials) == 9 + 4
    assert trials.loc["iw_maxsquare_seed2", "status"] == "error"
    assert trials.loc["iw_maxsquare_seed2", "evaluations"] == 0
    assert trials.loc["sweep_2", "status"] == "stopped"
    assert trials.loc["sweep_3", "status"] == "running"
    assert trials.loc["sweep_3", "iterations"] == 20  # no status.json: its last evaluation
    assert trials.loc["sweep_1", "param:loss.lambda_target"] == 0.1
    assert trials.loc["sweep_1", "config"] == "lambda_target=0.1, lr=0.00025"
    evals = results.evals
    assert len(evals) == sum(len(records) for records in written.values())
    assert evals["target_im"].isna().all()  # JSON null
    row = evals[(evals["trial_name"] == "maxsquare_seed1") & (evals["iteration"] == 20)].iloc[0]
    assert row["oracle_miou"] == written["variants", "maxsquare_seed1"][1]["oracle_miou"]
    assert math.isnan(row["oracle_iou"][16]) and len(row["oracle_iou"]) == 19


def test_a_broken_line_before_the_last_is_an_error(tmp_path):
    RunDir(tmp_path).metrics.write_text('{"iteration": 1}\n{"iter\n{"iteration": 3}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        RunDir(tmp_path).read_metrics()


def test_variant_rows_are_the_objectives_pick_with_seed_statistics_and_paired_test(report):
    _, markdown, tables, written = report
    table = tables["variants_variants"].set_index("variant")
    baseline = _variant_values(written, "source_only", "selected")
    for variant in VARIANT_BASE:
        chosen = _variant_values(written, variant, "selected")
        values = np.array(list(chosen.values()))
        assert table.loc[variant, "n_seeds"] == len(values)
        assert table.loc[variant, "mean"] == pytest.approx(100 * values.mean())
        assert table.loc[variant, "std"] == pytest.approx(100 * values.std(ddof=1))
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
        assert table.loc[variant, "ci_high"] == pytest.approx(100 * (values.mean() + half))
        final = np.array(list(_variant_values(written, variant, "final").values()))
        assert table.loc[variant, "final_mean"] == pytest.approx(100 * final.mean())
        assert final.mean() > values.mean()  # honest: the label-free pick is not the oracle-best checkpoint
        if variant != "source_only":
            seeds = sorted(chosen)
            ours, base = [chosen[s] for s in seeds], [baseline[s] for s in seeds]
            assert table.loc[variant, "n_pairs"] == len(seeds)
            assert table.loc[variant, "change"] == pytest.approx(100 * np.mean(np.subtract(ours, base)))
            assert table.loc[variant, "p_value"] == pytest.approx(stats.ttest_rel(ours, base).pvalue)
    paper = {"source_only": 36.9, "maxsquare": 44.3, "iw_maxsquare": 45.2}
    assert table["paper"].to_dict() == paper
    maxsquare = _variant_values(written, "maxsquare", "selected")
    values = list(maxsquare.values())
    shown = f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"
    assert shown in markdown
    assert "`source_val_miou` (max)" in markdown and "**label-free**" in markdown
    assert "Left out: 1 errored trial(s)" in markdown


def test_paper_benchmarks_by_key_and_city():
    def benchmark(name):
        return paper_benchmark(
            layout.Plan(experiment="e", metric="target_im", max_iterations=1, benchmark=name)
        )

    assert benchmark("synthia_to_cityscapes")["miou13"]["maxsquare"] == 45.8
    assert benchmark("cityscapes_to_crosscity/rome")["miou"]["iw_maxsquare"] == 54.5
    assert benchmark("cityscapes_to_crosscity")["miou"] == {}  # which city?
    assert benchmark(None) is None


def test_per_class_rows_leave_out_absent_classes_and_show_the_paper(report):
    _, _, tables, written = report
    table = tables["per_class_variants"].set_index("class")
    assert "train" not in table.index and "motorcycle" not in table.index
    assert len(table) == 17
    chosen = [
        _selected(written["variants", f"maxsquare_seed{s}"], "source_val_miou", "max") for s in (0, 1, 2)
    ]
    road = np.mean([record["oracle_iou"][0] for record in chosen])
    assert table.loc["road", "maxsquare"] == pytest.approx(100 * road)
    assert table.loc["traffic light", "paper iw_maxsquare_multi"] == 34.7


def test_sweep_picks_the_configuration_and_checkpoint_its_objective_chooses(report, fake_study):
    _, markdown, tables, written = report
    row = tables["variants_sweep"].iloc[0]
    best_trial = min(SWEEP, key=lambda name: min(r["target_entropy"] for r in written["sweep", name]))
    assert best_trial == "sweep_1"
    assert row["config"] == "lambda_target=0.1, lr=0.00025"
    assert row["mean"] == pytest.approx(100 * 0.38)  # the best entropy checkpoint, not the final (0.37)
    assert row["final_mean"] == pytest.approx(100 * 0.37)
    assert "Provisional: 1 trial(s) still running" in markdown

    lr = tables["sensitivity_sweep_optim.lr"].set_index("optim.lr")
    assert lr.loc[0.0001, "mean"] == pytest.approx(100 * np.mean([0.36, 0.25]))
    assert lr.loc[0.0001, "count"] == 2


def test_oracle_objective_selects_the_oracle_best_checkpoint(fake_study):
    study, written = fake_study
    exp = load_study(study).experiment("variants")
    exp.plan = dataclasses.replace(exp.plan, metric="oracle_miou", oracle=True)
    selection = select(exp)
    best = max(record["oracle_miou"] for record in written["variants", "maxsquare_seed0"])
    assert selection.values("maxsquare")[0] == best


def test_label_free_selection_picks_and_signed_rank_correlations(report):
    _, _, tables, written = report
    table = tables["selection_variants"].set_index("validator")
    assert "target_im" not in table.index  # never reported
    records = [r for (experiment, _), rs in written.items() if experiment == "variants" for r in rs]
    oracle = [r["oracle_miou"] for r in records]
    # target_entropy = 1 - oracle: perfectly anti-correlated, i.e. it agrees once its "min" mode is applied.
    assert table.loc["target_entropy", "spearman"] == pytest.approx(1.0)
    assert table.loc["target_entropy", "gap"] == pytest.approx(0.0)
    square = [r["target_max_square"] for r in records]
    assert table.loc["target_max_square", "kendall"] == pytest.approx(
        stats.kendalltau(square, oracle).statistic
    )
    pick = max(records, key=lambda r: r["source_val_miou"])
    assert table.loc["source_val_miou", "pick_target"] == pytest.approx(100 * pick["oracle_miou"])
    assert table.loc["source_val_miou", "oracle_best"] == pytest.approx(100 * max(oracle))


def test_pruning_budget_counts_trial_iterations_and_rungs(report):
    _, markdown, tables, _ = report
    budget = tables["budget_sweep"].iloc[0]
    assert budget["trial-iterations used"] == 30 + 30 + 10 + 20
    assert budget["every trial to the end"] == 4 * 30
    rungs = tables["rungs_sweep"].set_index("last iteration reached")
    assert rungs.loc[10, "stopped"] == 1 and rungs.loc[30, "finished"] == 2 and rungs.loc[20, "running"] == 1
    curve = tables["budget_curve_sweep"]
    assert curve["trial_iterations"].is_monotonic_increasing and curve["trial_iterations"].iloc[-1] == 90
    assert curve["best_objective"].iloc[-1] == pytest.approx(1 - 0.38)
    assert curve["pick_target"].iloc[-1] == pytest.approx(0.38)
    assert "budget_variants" not in tables  # FIFO: nothing pruned
    # target_entropy = 1 - oracle: at iteration 10 sweep_0 .70, sweep_1 .67, sweep_2 .75 (stopped), sweep_3
    # .69; sweep_1 has the best final objective (.62); two finished trials are too few for a correlation.
    audit = tables["pruning_audit_sweep"].set_index("rung")
    assert (
        list(audit.index) == [10] and audit.at[10, "trials evaluated"] == 4 and audit.at[10, "continued"] == 3
    )
    assert audit.at[10, "pick's rank"] == 1 and audit.at[10, "finished trials"] == 2
    assert pd.isna(audit.at[10, "spearman"]) and "**Pruning audit.**" in markdown


def test_learning_curves_average_seeds_per_iteration(report):
    _, _, tables, written = report
    curves = tables["curves_variants"]
    row = curves[
        (curves["variant"] == "maxsquare") & (curves["metric"] == "oracle_miou") & (curves["iteration"] == 20)
    ].iloc[0]
    values = [written["variants", f"maxsquare_seed{s}"][1]["oracle_miou"] for s in (0, 1, 2)]
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row["std"] == pytest.approx(np.std(values, ddof=1))


def test_unfinished_trials_are_listed_with_reasons_and_files_are_written(report):
    path, markdown, tables, _ = report
    listed = tables["unfinished_trials"].set_index("trial_name")
    assert set(listed.index) == {"iw_maxsquare_seed2", "sweep_2", "sweep_3"}
    overview = tables["overview"].set_index("experiment")
    assert overview.loc["sweep", "scheduler"] == "asha" and overview.loc["sweep", "search"] == "random"
    assert overview.loc["variants", ["finished", "error"]].tolist() == [8, 1]
    assert "NonFiniteLossError: non-finite loss term 'target_loss' at 5" in markdown
    assert "stopped by the asha scheduler at iteration 10 of 30" in markdown
    for number in range(1, 8):
        assert f"## {number}. " in markdown
    images = [part.split(")")[0] for part in markdown.split("](plots/")[1:]]
    assert images and all((path.parent / "plots" / image).is_file() for image in images)
    assert (path.parent / "tables" / "variants_variants.tex").read_text().startswith("\\begin{tabular}")
    header, rule = markdown.split("| variant ")[1].splitlines()[:2]  # aligned: equal widths on both lines
    assert len("| variant " + header) == len(rule)


def _study_without_trials(path):
    """A study just created: its plan is written, no trial has started."""
    layout.write_json(path / layout.STUDY_FILE, {"name": "new", "experiments": ["variants"]})
    layout.write_plan(
        path,
        fakes.plan(
            "variants",
            metric="source_val_miou",
            mode="max",
            variants=["maxsquare"],
            seeds=[0],
            searched={},
            scheduler="asha",
            num_trials=2,
        ),
    )
    return path


@pytest.mark.parametrize("scheduler", ["successive_halving", "hyperband"])
def test_the_synchronous_schedulers_get_a_pruning_budget(fake_study, tmp_path, scheduler):
    study = tmp_path / "fake"
    shutil.copytree(fake_study[0], study)
    plan_file = layout.experiment_dir(study, "sweep") / layout.PLAN_FILE
    layout.write_json(plan_file, {**layout.read_json(plan_file), "scheduler": {"name": scheduler}})
    build_report(study, tmp_path / "out")
    budget = pd.read_csv(tmp_path / "out" / "tables" / "budget_sweep.csv").iloc[0]
    assert budget["scheduler"] == scheduler and budget["trial-iterations used"] == 30 + 30 + 10 + 20


def test_a_study_without_trials_yet_still_reports(tmp_path):
    markdown = build_report(_study_without_trials(tmp_path / "new"), tmp_path / "out").read_text()
    assert "| maxsquare" in markdown  # the variant keeps its row, with no seeds
    assert "No trial has started yet." in markdown


def test_cli_writes_the_report(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["report", str(_study_without_trials(tmp_path / "new")), "--out", str(tmp_path / "cli")]
    )
    assert args.handler(args) == 0
    assert str(tmp_path / "cli" / "report.md") in capsys.readouterr().out
    not_a_study = parser.parse_args(["report", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="not a study directory"):
        not_a_study.handler(not_a_study)


def test_a_user_loss_is_named_by_its_import_path_and_reading_never_imports_it(fake_study, tmp_path):
    study = tmp_path / "fake"
    shutil.copytree(fake_study[0], study)
    plan_file = layout.experiment_dir(study, "variants") / layout.PLAN_FILE
    plan = layout.read_json(plan_file)
    plan["variants"]["maxsquare"] = {"loss.target": "gone_user_pkg.losses:focal", "loss.options.gamma": 2}
    layout.write_json(plan_file, plan)
    markdown = build_report(study, tmp_path / "out").read_text()
    assert re.search(r"\| maxsquare +\| gone_user_pkg.losses:focal +\|", markdown)
    table = pd.read_csv(tmp_path / "out" / "tables" / "variants_variants.csv").set_index("variant")
    assert table.loc["maxsquare", "loss"] == "gone_user_pkg.losses:focal"
    assert "gone_user_pkg.losses:focal" in format_comparison([study])[0]
    assert "fake" in format_status(study_status(study))
    assert not any(name.startswith("gone_user_pkg") for name in sys.modules)


# --- the selection audit's tables (tests/test_selection.py checks study.selection's numbers themselves) -----


def test_the_audit_tables_show_study_selections_audit_in_percent_with_reference_rows(report, fake_study):
    _, markdown, tables, _ = report
    evals = with_study_validators(load_study(fake_study[0]).experiment("variants"))
    rows = [("target_max_square", "max"), ("ensemble_agreement", "max"), ("seed_disagreement", "min")]
    for level, audit in (("checkpoint", checkpoint_audit), ("configuration", configuration_audit)):
        table = tables[f"selection_{level}s_variants"].set_index("validator")
        for validator, mode in rows:
            expected = audit(evals, validator, mode)
            assert table.loc[validator, "regret"] == pytest.approx(100 * expected["regret"]), (
                level,
                validator,
            )
            assert table.loc[validator, "top3"] == pytest.approx(100 * expected["top3"]), (level, validator)
            assert table.loc[validator, "spearman"] == pytest.approx(expected["spearman"], nan_ok=True)
        assert table.loc["oracle: target mIoU", "regret"] == 0
    last = checkpoint_audit(evals, "iteration", "max")["regret"]
    assert tables["selection_checkpoints_variants"].set_index("validator").loc[
        "no selection: last", "regret"
    ] == pytest.approx(100 * last)
    assert "**Checkpoint level**" in markdown and "**Configuration level**" in markdown
    joint = tables["selection_variants"].set_index("validator")
    picked = joint.loc["ensemble_agreement", ["variant", "seed", "iteration"]].tolist()
    chosen = evals.set_index(["variant", "seed", "iteration"]).loc[picked[0], int(picked[1]), int(picked[2])]
    assert chosen["ensemble_agreement"] == evals["ensemble_agreement"].max()


def test_a_tuning_experiment_gets_the_variant_level_audit_with_its_picks_on_an_edge(report, fake_study):
    """What a tune experiment decides (one configuration per variant), audited per validator; an experiment
    that searches nothing has no such table."""
    _, markdown, tables, _ = report
    exp = load_study(fake_study[0]).experiment("sweep")
    evals = with_study_validators(exp)
    checkpoints = selected_checkpoints(exp, evals)  # as the tuning scores configurations, not the last ones
    assert not checkpoints.index.equals(last_checkpoints(evals).index)
    table = tables["selection_per_variant_sweep"].set_index("validator")
    for validator, mode, row in (
        ("target_entropy", "min", "target_entropy (chooses)"),  # the sweep's objective
        ("target_max_square", "max", "target_max_square"),
    ):
        expected = variant_audit(checkpoints, validator, mode)
        assert table.loc[row, "regret"] == pytest.approx(100 * expected["regret"])
        on_edge = sum(bool(exp.edges(variant, config)) for variant, config in expected["picks"].items())
        assert table.loc[row, "picks_on_edge"] == on_edge
    assert table.loc["oracle: target mIoU", "regret"] == 0
    assert "**Variant level**" in markdown
    assert "selection_per_variant_variants" not in tables
