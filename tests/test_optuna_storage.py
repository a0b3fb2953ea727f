"""An Optuna search keeps its Optuna study in a journal file of the experiment (study/runner.py:_searcher).

Driven through the searcher (Ray's OptunaSearch, `study.optuna_record`) as Tune drives it (suggest, report
results and completion, save and restore its state for a resumed study), without starting Ray; the journal
is then read back with Optuna's own `load_study`, as `optuna.importance` reads it, and through
optuna-dashboard's API.
"""

from __future__ import annotations

import json
import threading
from urllib.request import urlopen
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from study import layout
from study.runner import _param_space, _searcher
from study.space import load_space
from tests.conftest import tiny_config

HORIZON = 12  # iterations of a full trial


def _sweep(tmp_path, algorithm: str = "optuna"):
    space = {
        "name": "journal",
        "config": tiny_config(tmp_path),
        "metric": "target_im",
        "experiments": {
            "sweep": {
                "variants": ["iw_maxsquare"],
                "params": {
                    "loss.lambda_target": {"loguniform": [0.01, 1.0]},
                    "optim.lr": {"uniform": [0.001, 0.01]},
                },
                "search": {"algorithm": algorithm, "num_samples": 6, "seed": 3},
                "max_concurrent": 2,
            }
        },
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return load_space(path).experiments[0]


def _searcher_for(experiment, study_dir):
    searcher = _searcher(experiment, study_dir, HORIZON).searcher  # inside the limit of max_concurrent
    searcher.set_search_properties(experiment.metric, experiment.mode, _param_space(experiment))
    return searcher


def test_the_searchers_trials_and_values_are_in_the_journal_and_survive_a_restore(tmp_path):
    experiment, study_dir = _sweep(tmp_path), tmp_path / "study"
    layout.experiment_dir(study_dir, "sweep").mkdir(parents=True)
    searcher = _searcher_for(experiment, study_dir)
    told = {}
    for index in range(3):
        config = searcher.suggest(f"t{index}")
        told[config["loss.lambda_target"]] = -float(index)
        searcher.on_trial_complete(f"t{index}", {"target_im": -float(index), **config})
    searcher.save(str(tmp_path / "searcher.pkl"))  # what Tune keeps to resume an interrupted study

    resumed = _searcher_for(experiment, study_dir)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    config = resumed.suggest("t3")
    told[config["loss.lambda_target"]] = -3.0
    resumed.on_trial_complete("t3", {"target_im": -3.0, **config})

    journal = layout.experiment_dir(study_dir, "sweep") / layout.OPTUNA_JOURNAL
    stored = optuna.load_study(study_name="sweep", storage=JournalStorage(JournalFileBackend(str(journal))))
    complete = [t for t in stored.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.params["loss.lambda_target"]: t.value for t in complete} == told
    assert stored.direction == optuna.study.StudyDirection.MINIMIZE  # target_im is better when lower
    assert {"loss.lambda_target", "optim.lr"} <= set(complete[0].params)


def test_random_search_draws_the_same_configurations_from_the_same_seed(tmp_path):
    from ray.tune.experiment import Experiment as TuneExperiment

    experiment = _sweep(tmp_path, "random")
    experiment.max_concurrent = None  # draw all six without waiting for any to end

    def draws(seed: int) -> list[dict]:
        experiment.search.seed = seed
        generator = _searcher(experiment, tmp_path, HORIZON)
        space = _param_space(experiment)
        generator.add_configurations([TuneExperiment("x", lambda config: None, config=space, num_samples=6)])
        trials = iter(generator.next_trial, None)
        return [{k: t.config[k] for k in ("loss.lambda_target", "optim.lr")} for t in trials]

    first = draws(3)
    assert len(first) == 6 and draws(3) == first and draws(4) != first


def _stored(study_dir):
    journal = layout.experiment_dir(study_dir, "sweep") / layout.OPTUNA_JOURNAL
    return optuna.load_study(study_name="sweep", storage=JournalStorage(JournalFileBackend(str(journal))))


def _result(iteration: int, count: int, value: float) -> dict:
    """A result as Tune hands it to the searcher: msl's iteration and Tune's report count."""
    return {"iteration": iteration, "training_iteration": count, "target_im": value}


def _three_trials(tmp_path):
    """A study whose searcher saw a trial run to the horizon, one stopped by a scheduler and one fail."""
    experiment, study_dir = _sweep(tmp_path), tmp_path / "study"
    layout.experiment_dir(study_dir, "sweep").mkdir(parents=True)
    searcher = _searcher_for(experiment, study_dir)
    for name in ("full", "stopped", "failed"):
        searcher.suggest(name)
    searcher.on_trial_result("full", _result(4, 1, 0.5))
    searcher.on_trial_result("full", _result(8, 2, 0.4))
    searcher.on_trial_complete("full", _result(12, 3, 0.3))
    searcher.on_trial_result("stopped", _result(4, 1, 0.6))
    # Tune does not pass the result at which a scheduler stops a trial to on_trial_result, only to complete
    searcher.on_trial_complete("stopped", _result(8, 2, 0.55))
    searcher.on_trial_result("failed", _result(4, 1, 0.7))
    searcher.on_trial_complete("failed", _result(4, 1, 0.7), error=True)
    return study_dir


def test_a_trial_a_scheduler_stopped_is_pruned_with_its_values_keyed_by_iteration(tmp_path):
    study_dir = _three_trials(tmp_path)
    full, stopped, failed = _stored(study_dir).trials
    state = optuna.trial.TrialState
    assert (full.state, full.value, full.intermediate_values) == (
        state.COMPLETE,
        0.3,
        {4: 0.5, 8: 0.4, 12: 0.3},
    )
    # Optuna gives a pruned trial its last intermediate value as its value
    assert (stopped.state, stopped.value, stopped.intermediate_values) == (
        state.PRUNED,
        0.55,
        {4: 0.6, 8: 0.55},
    )
    assert failed.state == state.FAIL


def test_a_trial_stopped_while_it_waits_is_judged_by_its_last_report(tmp_path):
    """HyperBand pauses a trial at a rung, or at the horizon until its bracket ends, then stops it: Tune
    then tells the searcher without a result."""
    experiment, study_dir = _sweep(tmp_path), tmp_path / "study"
    layout.experiment_dir(study_dir, "sweep").mkdir(parents=True)
    searcher = _searcher_for(experiment, study_dir)
    for name, last in (("at_the_horizon", 12), ("at_a_rung", 4)):
        searcher.suggest(name)
        for iteration in range(4, last + 1, 4):
            searcher.on_trial_result(name, _result(iteration, iteration // 4, 1.0 / iteration))
        searcher.on_trial_complete(name)
    done, waited = _stored(study_dir).trials
    assert (done.state, done.value) == (optuna.trial.TrialState.COMPLETE, pytest.approx(1 / 12))
    assert (waited.state, waited.value) == (optuna.trial.TrialState.PRUNED, 0.25)


def test_a_resumed_trial_keeps_the_value_it_reported_before_the_driver_died(tmp_path):
    """Tune saved the searcher's state before the trial's first report; the driver died after it. The resumed
    trial continues from its own checkpoint at iteration 4 and Tune counts its reports from 1 again."""
    experiment, study_dir = _sweep(tmp_path), tmp_path / "study"
    layout.experiment_dir(study_dir, "sweep").mkdir(parents=True)
    searcher = _searcher_for(experiment, study_dir)
    searcher.suggest("t0")
    searcher.save(str(tmp_path / "searcher.pkl"))
    searcher.on_trial_result("t0", _result(4, 1, 0.5))

    resumed = _searcher_for(experiment, study_dir)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_result("t0", _result(8, 1, 0.4))
    resumed.on_trial_complete("t0", _result(12, 2, 0.3))

    (trial,) = _stored(study_dir).trials
    assert trial.intermediate_values == {4: 0.5, 8: 0.4, 12: 0.3}
    assert (trial.state, trial.value) == (optuna.trial.TrialState.COMPLETE, 0.3)


def test_optuna_dashboard_shows_the_pruned_trial_and_its_values(tmp_path):
    """optuna-dashboard's own API, served on 127.0.0.1 as `optuna-dashboard <journal>` serves it."""
    import optuna_dashboard

    study_dir = _three_trials(tmp_path)
    journal = layout.experiment_dir(study_dir, "sweep") / layout.OPTUNA_JOURNAL
    app = optuna_dashboard.wsgi(JournalStorage(JournalFileBackend(str(journal))))
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/api/studies"
        (summary,) = json.loads(urlopen(url, timeout=30).read())["study_summaries"]
        assert summary["study_name"] == "sweep"
        detail = json.loads(urlopen(f"{url}/{summary['study_id']}", timeout=30).read())
    finally:
        server.shutdown()
    states = [trial["state"] for trial in detail["trials"]]
    steps = [[value["step"] for value in trial["intermediate_values"]] for trial in detail["trials"]]
    assert states == ["Complete", "Pruned", "Fail"]
    assert steps == [[4, 8, 12], [4, 8], [4]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # no access log on stderr
        pass
