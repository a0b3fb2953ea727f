"""`seeds_per_sample`: each configuration the searcher proposes runs on every seed inside one trial, and the
searcher and the scheduler see the mean over seeds.

One real study (local Ray, Optuna TPE, ASHA) on the tiny synthetic benchmark, then checks against independent
numbers: Optuna's own journal, the seeds' records on disk, and a plain training run of one seed.
"""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from msl.run_dir import RunDir
from msl.trainer import train
from study import layout
from study.results import ExperimentResults, load_study
from study.runner import _param_space
from study.space import load_space
from study.status import study_status
from study.worker import _seed_mean, in_worker
from tests.test_study import msl_study, read, space_file

SEEDS = [0, 1]
TIMING = ("elapsed_s", "time", "wall_time")


def test_the_trial_reports_the_mean_over_seeds_and_nan_in_any_seed_spoils_it():
    records = {0: {"iteration": 4, "target_im": -1.0, "ok": True}, 1: {"iteration": 4, "target_im": -2.0}}
    assert _seed_mean(records) == {"iteration": 4.0, "target_im": -1.5}
    assert math.isnan(_seed_mean({0: {"m": 1.0}, 1: {"m": math.nan}})["m"])


def test_a_plan_of_several_seeds_per_trial_asks_for_a_run_per_seed():
    plan = layout.Plan(
        experiment="main", metric="target_im", max_iterations=12, num_trials=3, seeds_per_sample=2
    )
    exp = ExperimentResults("main", plan, pd.DataFrame({"trial_name": ["a@s0"]}), pd.DataFrame())
    assert exp.planned_runs == 6 and exp.mode == "min"
    unsaid = layout.Plan(experiment="main", metric="target_im", max_iterations=12)
    assert ExperimentResults("main", unsaid, exp.trials, pd.DataFrame()).planned_runs == 1


@pytest.fixture(scope="module")
def study(synth, tmp_path_factory):
    """3 configurations x 2 seeds in 3 trials, ASHA rungs at 4 and 8 of 12 iterations."""
    tmp = tmp_path_factory.mktemp("spp")
    space = space_file(
        tmp / "space.yaml",
        synth,
        seeds=SEEDS,
        seeds_per_sample=2,
        variants=["iw_maxsquare"],
        params={"loss.lambda_target": {"loguniform": [0.01, 1.0]}},
        search={"algorithm": "optuna", "num_samples": 3, "seed": 0},
        scheduler={"name": "asha", "grace_period": 4, "reduction_factor": 2},
        max_concurrent=1,
    )
    result = msl_study("run", space, "--storage", tmp / "studies", "--report")
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp / "studies" / "tiny", space


@pytest.mark.slow
def test_each_trial_runs_every_seed_and_the_results_have_a_row_per_seed(study):
    study_dir, _ = study
    trials = read(study_dir, "main", layout.TRIAL_FILE)
    assert len(trials) == 3 and all(t["seeds"] == SEEDS for t in trials.values())
    for name in trials:
        assert all((layout.trials_dir(study_dir, "main") / name / f"run_s{seed}").is_dir() for seed in SEEDS)
    results = load_study(study_dir).experiment("main")
    assert len(results.trials) == 6 and sorted(results.trials["seed"]) == [0, 0, 0, 1, 1, 1]
    per_trial = results.trials.assign(trial=results.trials["trial_name"].str.split(layout.SEED_MARK).str[0])
    for _, rows in per_trial.groupby("trial"):  # both seeds of a trial: one configuration, one fate
        assert rows["config"].nunique() == 1 and rows["status"].nunique() == 1
        assert rows["iterations"].nunique() == 1 and set(rows["iterations"]) <= {4, 8, 12}
    assert (study_dir / "report" / "report.md").is_file()
    (status,) = study_status(study_dir).experiments
    assert status.planned_trials == 6 and status.remaining == 0  # a run per seed, all of them ended


@pytest.mark.slow
def test_optuna_is_told_the_mean_over_seeds_of_each_trials_last_evaluation(study):
    study_dir, _ = study
    results = load_study(study_dir).experiment("main")
    last = results.evals.sort_values("iteration").groupby("trial_name").last()
    expected = {}
    for row_name, record in last.iterrows():
        trial = row_name.split(layout.SEED_MARK)[0]
        expected.setdefault(trial, []).append(record["target_im"])
    lambdas = {
        trial: results.trials.loc[
            results.trials["trial_name"].str.startswith(trial), "param:loss.lambda_target"
        ].iloc[0]
        for trial in expected
    }
    journal = layout.experiment_dir(study_dir, "main") / layout.OPTUNA_JOURNAL
    stored = optuna.load_study(study_name="main", storage=JournalStorage(JournalFileBackend(str(journal))))
    told = {t.params["loss.lambda_target"]: t.value for t in stored.trials if t.value is not None}
    assert len(told) == 3
    for trial, values in expected.items():
        assert told[lambdas[trial]] == pytest.approx(sum(values) / len(values), rel=1e-9)


@pytest.mark.slow
def test_a_seeds_run_in_steps_equals_a_plain_run_of_that_seed(study, tmp_path):
    study_dir, space_path = study
    space = load_space(space_path)
    experiment = space.experiments[0]
    assert _param_space(experiment)["seeds"] == SEEDS
    name, info = next(
        (name, info)
        for name, info in read(study_dir, "main", layout.TRIAL_FILE).items()
        if read(study_dir, "main", layout.STATUS_FILE)[name]["iterations"] == 12
    )
    source = RunDir(info["source_runs"]["1"]).best
    cfg = space.trial_config(experiment, "iw_maxsquare", 1, info["params"], source_checkpoint=str(source))
    train(in_worker(cfg, experiment.resources.cpu), tmp_path / "plain")
    stepped = RunDir(layout.trials_dir(study_dir, "main") / name / "run_s1").read_metrics()
    plain = RunDir(tmp_path / "plain").read_metrics()
    assert _untimed(stepped) == _untimed(plain)


def _untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING} for record in records]
