"""study/results.py: a fake study directory, written file by file here, read back into the rows and columns
that the files say (statuses, iterations, searched values, configuration labels, wall times, one row per seed
of a trial that runs several)."""

from __future__ import annotations

import json
import math
import os

import pandas as pd
import pytest

from study import layout
from study.results import config_label, format_value, load_study, param_column
from tests import fakes
from tests.fakes import ITERATIONS

SEARCHED = {"loss.lambda_target": {"loguniform": [0.01, 1.0]}, "optim.lr": {"choice": [1e-4, 2.5e-4]}}
STARTED = 1_000_000.0  # the trials' start (trial.json's mtime)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Experiment `sweep`: a finished trial, a stopped one, a running one whose last line is being written and
    one that errored before its first evaluation; experiment `pooled`: one trial of seeds 3 and 4; experiment
    `later`: listed in study.json, not planned yet."""
    study = tmp_path_factory.mktemp("study") / "fake"
    fakes.study_file(study, ["sweep", "pooled", "later"])
    plan = fakes.plan(
        "sweep",
        metric="target_entropy",
        mode="min",
        variants=["maxsquare"],
        seeds=[0],
        searched=SEARCHED,
        scheduler="asha",
        num_trials=4,
    )
    layout.write_plan(study, plan)
    trials = {  # name: (lambda_target, lr, status.json, evaluations written)
        "t0": (0.0123456, 1e-4, fakes.finished(), 3),
        "t1": (0.5, 2.5e-4, {"status": "stopped", "iterations": 10, "error": None, "reason": "rung"}, 1),
        "t2": (0.1, 1e-4, None, 2),
        "t3": (0.9, 1e-4, {"status": "error", "iterations": 4, "error": "Traceback", "reason": "raised"}, 0),
    }
    for name, (lambda_target, lr, status, count) in trials.items():
        records = [fakes.record(it, 0.3 + it / 1000, 0.6, 0.7) for it in ITERATIONS[:count]]
        if name == "t0":
            records[1]["time"] = 2_000_000.0  # a record that says when it was written
        fakes.write_trial(
            study,
            "sweep",
            name,
            variant="maxsquare",
            seed=0,
            status=status,
            records=records,
            params={"loss": {"lambda_target": lambda_target}, "optim": {"lr": lr}},
            truncated_line='{"iteration": 30, "ora' if name == "t2" else None,
            started=STARTED,
        )
    plan = fakes.plan(
        "pooled",
        metric="target_im",
        mode="min",
        variants=["iw_maxsquare"],
        seeds=[3, 4],
        searched={},
        scheduler="fifo",
        num_trials=1,
        seeds_per_sample=2,
    )
    layout.write_plan(study, plan)
    trial_dir = layout.trials_dir(study, "pooled") / "p0"
    info = {"trial_name": "p0", "experiment": "pooled", "variant": "iw_maxsquare", "params": {}}
    layout.write_json(trial_dir / layout.TRIAL_FILE, {**info, "seeds": [3, 4], "source_runs": {"3": "s3"}})
    layout.write_json(trial_dir / layout.STATUS_FILE, fakes.finished())
    for seed in (3, 4):
        metrics = trial_dir / layout.run_dir_name(seed) / "metrics.jsonl"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(
            "".join(json.dumps(fakes.record(it, seed / 10, 0.6, 0.7)) + "\n" for it in ITERATIONS)
        )
    return load_study(study)


def test_experiments_in_study_order_and_only_those_with_a_plan(study):
    assert list(study.plans) == ["sweep", "pooled"]
    assert [exp.name for exp in study.experiments()] == ["sweep", "pooled"]


def test_a_trial_row_holds_its_status_iterations_and_searched_values(study):
    trials = study.experiment("sweep").trials.set_index("trial_name")
    assert list(trials.index) == ["t0", "t1", "t2", "t3"]
    assert list(trials["status"]) == ["finished", "stopped", "running", "error"]  # no status.json: running
    assert list(trials["iterations"]) == [30, 10, 20, 4]  # status.json's, else the last evaluation's
    assert list(trials["evaluations"]) == [3, 1, 2, 0]  # the truncated line of t2 is not an evaluation
    assert trials.at["t3", "error"] == "Traceback" and trials.at["t1", "reason"] == "rung"
    assert trials.at["t0", param_column("loss.lambda_target")] == 0.0123456
    assert trials.at["t1", param_column("optim.lr")] == 2.5e-4
    assert trials.at["t0", "config"] == "lambda_target=0.01235, lr=0.0001"


def test_an_evaluation_row_per_record_with_the_trials_ids_and_wall_time(study):
    evals = study.experiment("sweep").evals
    assert len(evals) == 3 + 1 + 2
    t0 = evals[evals["trial_name"] == "t0"].set_index("iteration")
    assert list(t0.index) == list(ITERATIONS)
    assert t0.at[20, "oracle_miou"] == pytest.approx(0.32)
    assert (t0["variant"] == "maxsquare").all() and (t0["config"] == "lambda_target=0.01235, lr=0.0001").all()
    assert t0.at[20, "wall_time"] == 2_000_000.0  # the record's own time
    mtime = os.stat(layout.trials_dir(study.path, "sweep") / "t0" / layout.TRIAL_FILE).st_mtime
    assert mtime == STARTED and t0.at[30, "wall_time"] == STARTED + 30  # the start plus elapsed_s


def test_a_trial_of_several_seeds_gives_a_row_per_seed(study):
    exp = study.experiment("pooled")
    names = [layout.seed_row_name("p0", seed) for seed in (3, 4)]
    trials = exp.trials.set_index("trial_name")
    assert list(trials.index) == names
    assert list(trials["seed"]) == [3, 4]
    assert trials.at[names[0], "source_run"] == "s3" and pd.isna(trials.at[names[1], "source_run"])
    assert list(trials["config"]) == ["default", "default"]
    evals = exp.evals.groupby("trial_name")["oracle_miou"].mean()
    assert evals.to_dict() == pytest.approx({names[0]: 0.3, names[1]: 0.4})
    assert exp.planned_runs == 2  # one trial of two seeds


def test_a_study_with_nothing_evaluated_still_has_the_columns(tmp_path):
    fakes.study_file(tmp_path, [])
    results = load_study(tmp_path)
    assert results.trials.empty and results.evals.empty
    assert {"trial_name", "iteration", "wall_time", "oracle_miou", "target_im"} <= set(results.evals.columns)


def test_a_folder_that_is_no_study_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a study directory"):
        load_study(tmp_path)


@pytest.mark.parametrize(
    ("params", "label"),
    [
        ({}, "default"),
        ({"loss.lambda_target": None}, "default"),  # a key that the trial did not search
        ({"loss.lambda_target": 0.123456, "optim.lr": 2.5e-4}, "lambda_target=0.1235, lr=0.00025"),
        ({"loss.options.gamma": 2.0, "model.gamma": 1}, "loss.options.gamma=2, model.gamma=1"),  # ambiguous
        ({"data.random_crop": [64, 32]}, "random_crop=[64, 32]"),
    ],
)
def test_config_label_is_short_stable_and_unambiguous(params, label):
    assert config_label(params) == label


def test_format_value_keeps_four_significant_digits_of_floats_only():
    assert format_value(1 / 3) == "0.3333" and format_value(12345) == "12345" and format_value("a") == "a"
    assert math.isclose(float(format_value(2.5e-4)), 2.5e-4)
