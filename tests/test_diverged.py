"""A trial whose loss or objective became NaN or infinite is `diverged`: never `finished`, listed in the
report."""

import math

import pandas as pd

from study import layout
from study.decide import select
from study.report import build_report
from study.results import load_study
from study.runner import StudyCallback
from study.space import load_space
from tests import fakes
from tests.test_space import write


def _ended(callback, name, result, error_text=None, tmp_path=None):
    trial = type("Trial", (), {"last_result": result, "error_file": None, "__str__": lambda self: name})()
    if error_text is not None:
        trial.error_file = str(tmp_path / f"{name}.txt")
        (tmp_path / f"{name}.txt").write_text(error_text)
        callback.on_trial_error(0, [], trial)
    else:
        callback.on_trial_complete(0, [], trial)
    return layout.read_json(layout.trials_dir(tmp_path / "study", "main") / name / layout.STATUS_FILE)


def test_the_callback_marks_non_finite_trials_diverged(tmp_path):
    (experiment,) = load_space(write(tmp_path, metric="target_im")).experiments
    callback = StudyCallback(tmp_path / "study", experiment, total_trials=4, iterations=100)
    finite = {"iteration": 100, "target_im": 0.5, "loss_source_ce": 0.7}
    assert _ended(callback, "ok", finite, tmp_path=tmp_path)["status"] == "finished"
    nan_objective = _ended(callback, "nan", {**finite, "target_im": math.nan}, tmp_path=tmp_path)
    assert (
        nan_objective["status"] == "diverged"
        and nan_objective["error"] == "target_im is nan at iteration 100"
    )
    huge_loss = _ended(
        callback, "inf", {**finite, "iteration": 4, "loss_source_ce": math.inf}, tmp_path=tmp_path
    )
    assert huge_loss["status"] == "diverged" and "loss_source_ce is inf at iteration 4" in huge_loss["error"]
    raised = _ended(
        callback,
        "raised",
        finite,
        tmp_path=tmp_path,
        error_text=(
            "Traceback (most recent call last):\nmsl.trainer.NonFiniteLossError: non-finite loss term "
            "'source_ce' at "
            "iteration 3"
        ),
    )
    assert raised["status"] == "diverged" and "source_ce' at iteration 3" in raised["error"]


def test_the_report_leaves_diverged_trials_out_of_the_picks_and_lists_them(tmp_path):
    study = tmp_path / "study"
    layout.write_json(study / layout.STUDY_FILE, {"name": "d", "experiments": ["main"]})
    layout.write_plan(
        study,
        fakes.plan(
            "main",
            metric="source_val_miou",
            mode="max",
            variants=["maxsquare"],
            seeds=[0, 1],
            searched={},
            scheduler="fifo",
            num_trials=2,
        ),
    )
    fakes.write_trial(
        study,
        "main",
        "good",
        variant="maxsquare",
        seed=0,
        params={},
        status=fakes.finished(),
        records=[fakes.record(30, 0.4, 0.6, 0.7)],
    )
    fakes.write_trial(
        study,
        "main",
        "bad",
        variant="maxsquare",
        seed=1,
        params={},
        records=[fakes.record(30, 0.0, 0.0, 0.7)],
        status={
            "status": "diverged",
            "iterations": 30,
            "error": "target_im is nan at iteration 30",
            "reason": "diverged: a loss or the objective became NaN or infinite",
        },
    )
    assert select(load_study(study).experiment("main")).picks["trial_name"].tolist() == ["good"]
    path = build_report(study)
    listed = pd.read_csv(path.parent / "tables" / "unfinished_trials.csv")
    assert listed["trial_name"].tolist() == ["bad"] and listed["status"].tolist() == ["diverged"]
    assert "target_im is nan at iteration 30" in path.read_text()
    assert pd.read_csv(path.parent / "tables" / "overview.csv")["diverged"].tolist() == [1]
