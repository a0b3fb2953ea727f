"""An Optuna search keeps its Optuna study in a journal file of the experiment (study/runner.py:_searcher).

Driven through Ray's OptunaSearch as Tune drives it (suggest, report completion, save and restore its state
for a resumed study), without starting Ray; the journal is then read back with Optuna's own `load_study`, as
optuna-dashboard and `optuna.importance` read it.
"""

from __future__ import annotations

import optuna
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from study import layout
from study.runner import _param_space, _searcher
from study.space import load_space
from tests.conftest import tiny_config


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
    searcher = _searcher(experiment, study_dir).searcher  # inside the limit of max_concurrent
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
        generator = _searcher(experiment, tmp_path)
        space = _param_space(experiment)
        generator.add_configurations([TuneExperiment("x", lambda config: None, config=space, num_samples=6)])
        trials = iter(generator.next_trial, None)
        return [{k: t.config[k] for k in ("loss.lambda_target", "optim.lr")} for t in trials]

    first = draws(3)
    assert len(first) == 6 and draws(3) == first and draws(4) != first
