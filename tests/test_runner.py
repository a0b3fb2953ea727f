"""The study runner's decisions, without starting Ray (the Ray runs themselves are in test_study.py)."""

import pickle
from pathlib import Path

import pytest
import yaml

from msl.config import read_yaml
from msl.run_dir import RunDir
from study import layout
from study.runner import (
    StudyCallback,
    _param_space,
    _scheduler,
    _searched,
    create_study,
    ended_summary,
    expand_paths,
)
from study.space import (
    AshaScheduler,
    Experiment,
    PbtScheduler,
    SpaceError,
    Variant,
    load_space,
)


def _space_file(tmp_path, **space):
    base = {
        "data": {"source_root": "${MSL_TEST_UNSET}/source", "target_root": "${MSL_TEST_UNSET}/target"},
        "model": {"arch": "deeplab_resnet18_small"},
        "optim": {"iterations": 10},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "paths", "config": base, **space}))
    return path


def test_paths_are_expanded_after_the_spaces_own_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("MSL_TEST_UNSET", raising=False)
    monkeypatch.setenv("MSL_TEST_ROOT", str(tmp_path / "data"))
    path = _space_file(
        tmp_path,
        set={"data.source_root": "${MSL_TEST_ROOT}/gta5", "data.target_root": "${MSL_TEST_ROOT}/cityscapes"},
    )
    study = create_study(expand_paths(load_space(path)), storage=tmp_path / "studies")
    source = read_yaml(layout.source_config_file(study, "main", 0))
    assert source["data"]["source_root"] == str(tmp_path / "data" / "gta5")
    assert source["data"]["target_root"] == str(tmp_path / "data" / "cityscapes")


def test_an_unset_variable_in_a_path_a_run_reads_names_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("MSL_TEST_UNSET", raising=False)
    with pytest.raises(
        SpaceError, match=r"source stage: data.source_root: path '\$\{MSL_TEST_UNSET\}/source' uses"
    ):
        expand_paths(load_space(_space_file(tmp_path, set={"data.target_root": "/data/cityscapes"})))


def test_a_study_name_cannot_leave_the_storage_folder(tmp_path):
    with pytest.raises(ValueError, match="--name: '../escaped' is not allowed as a name"):
        create_study(
            load_space(_space_file(tmp_path, set={"data.source_root": "/a", "data.target_root": "/b"})),
            name="../escaped",
            storage=tmp_path / "studies",
        )
    assert not (tmp_path / "escaped").exists()


# ------------------------------------------------------------------------------------------------------------
# The runner's decisions, without a Ray cluster


@pytest.mark.parametrize(
    ("ended", "result", "status", "reason"),
    [
        ("complete", {"iteration": 100, "target_im": 0.5}, "finished", "ran every iteration"),
        (
            "complete",
            {"iteration": 30, "target_im": 0.5},
            "stopped",
            "stopped by the asha scheduler at iteration 30 of 100",
        ),
        ("error", {"iteration": 30, "target_im": 0.5}, "error", "raised an error (after its retries)"),
    ],
)
def test_an_ended_trial_gets_the_status_that_says_why(tmp_path, ended, result, status, reason):
    experiment = Experiment(metric="target_im", scheduler=AshaScheduler())
    callback = StudyCallback(tmp_path, experiment, total_trials=2, iterations=100)
    trial = type("Trial", (), {"last_result": result, "error_file": None, "__str__": lambda self: "t1"})()
    if ended == "error":
        trial.error_file = str(tmp_path / "error.txt")
        Path(trial.error_file).write_text("Traceback (most recent call last):\nValueError: no such file x\n")
        callback.on_trial_error(0, [], trial)
    else:
        callback.on_trial_complete(0, [], trial)
    written = layout.read_json(layout.trials_dir(tmp_path, "main") / "t1" / layout.STATUS_FILE)
    assert (written["status"], written["reason"], written["iterations"]) == (
        status,
        reason,
        result["iteration"],
    )
    assert written["error"] == ("ValueError: no such file x" if ended == "error" else None)


def test_ray_schedulers_get_the_defaults_the_space_shows():
    asha = _scheduler(Experiment(scheduler=AshaScheduler()), iterations=100)
    assert [milestone for milestone, _ in asha._brackets[0]._rungs] == [64, 16, 4, 1]  # 1 x 4^k up to 100
    pbt_spec = PbtScheduler(perturbation_interval=10, mutations={"optim.lr": {"choice": [0.1, 0.2]}})
    pbt = _scheduler(Experiment(scheduler=pbt_spec), iterations=100)
    assert (pbt._perturbation_interval, pbt._quantile_fraction, pbt._synch) == (10, 0.25, False)
    assert _scheduler(Experiment(), iterations=100) is None  # fifo: Tune's default


def _per_variant_grids() -> Experiment:
    return Experiment(
        params={"optim.lr": {"loguniform": [0.001, 0.01]}},
        variants={
            "source_only": Variant({}),
            "entropy": Variant({}, {"loss.lambda_target": {"grid": [0.2, 0.6]}}),
            "maxsquare": Variant({}, {"loss.lambda_target": {"grid": [0.8]}}),
        },
        seeds=[0, 1],
    )


def test_the_plan_lists_each_searched_key_once_with_per_variant_grids():
    assert _searched(_per_variant_grids()) == {
        "optim.lr": {"loguniform": [0.001, 0.01]},
        "loss.lambda_target": {"grid per variant": {"entropy": [0.2, 0.6], "maxsquare": [0.8]}},
    }


def test_each_variant_searches_its_own_grid_and_unsearched_variants_run_once():
    space = _param_space(_per_variant_grids())
    assert space["case"]["grid_search"] == [
        {"variant": "source_only"},
        {"variant": "entropy", "loss.lambda_target": 0.2},
        {"variant": "entropy", "loss.lambda_target": 0.6},
        {"variant": "maxsquare", "loss.lambda_target": 0.8},
    ]
    assert space["seed"]["grid_search"] == [0, 1]


def _ended(study, name, status):
    layout.write_json(layout.trials_dir(study, "main") / name / layout.STATUS_FILE, {"status": status})


def _running(study, name, iteration, iterations=100):
    RunDir(layout.trials_dir(study, "main") / name / layout.RUN_DIR).write_progress(
        iteration, iterations, 1.0
    )


def test_the_driver_counts_trials_ended_before_a_resume_and_says_error_once(tmp_path):
    _ended(tmp_path, "a", "finished")
    _ended(tmp_path, "b", "error")
    assert ended_summary(tmp_path, "main", 6) == (
        "2/6 trials ended (1 finished, 0 stopped early, 1 error, 0 diverged)"
    )


def test_the_eta_follows_the_iterations_done_not_the_trials_ended(tmp_path, monkeypatch):
    """Six trials at once, one ended and five at iteration 90 of 100 after a minute: seconds are left (the
    old rule, a minute per ended trial, said five minutes)."""
    experiment = Experiment(metric="target_im")
    callback = StudyCallback(tmp_path, experiment, total_trials=6, iterations=100)
    _ended(tmp_path, "t0", "finished")
    for k in range(1, 6):
        _running(tmp_path, f"t{k}", 90)
    assert callback.eta(callback.started + 60.0) == f", ETA ~{50 / (550 / 60) / 60:.1f} min"  # 0.1 min
    callback.setup()  # a resumed Tuner's callback: the work done before does not count as this driver's
    assert callback.eta(callback.started + 60.0) == ""


def test_a_callback_pickled_by_an_older_msl_resumes(tmp_path):
    """Tuner.restore unpickles the StudyCallback the study's first driver saved; one saved before
    `runs_per_trial` existed must still count work (it raised AttributeError)."""
    callback = StudyCallback(tmp_path, Experiment(metric="target_im"), total_trials=2, iterations=100)
    del callback.runs_per_trial  # as msl of 3c55404 pickled it
    restored = pickle.loads(pickle.dumps(callback))
    restored.setup()
    _ended(tmp_path, "t0", "finished")
    assert restored._work_done() == 100
