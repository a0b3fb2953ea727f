"""Search space files: the shipped ones validate, and every kind of mistake fails before Ray with its key."""

from pathlib import Path

import pytest
import yaml

from msl.config import load_config
from study.cli import main
from study.space import SpaceError, describe_plan, load_space, source_key

SPACES = sorted((Path(__file__).parent.parent / "search_spaces").glob("*.yaml"))
BASE = {"config": {"data": {"source_root": "/data/gta5", "target_root": "/data/cs"},
                   "model": {"arch": "deeplab_resnet18_small"}, "optim": {"iterations": 100}}}


def write(tmp_path: Path, **space) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**BASE, **space}))
    return path


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_shipped_spaces_validate_with_dry_run(path, capsys):
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "trials" in out and "budget: at most" in out and "label-free" in out


def test_plan_counts_trials_and_budget(tmp_path):
    space = load_space(write(tmp_path, seeds=[0, 1, 2], variants=["source_only", "maxsquare"],
                             params={"loss.iw_ratio": {"grid": [0.1, 0.2]}, "optim.lr": {"loguniform": [1e-4, 1e-2]}},
                             search={"algorithm": "random", "num_samples": 2}))
    (experiment,) = space.experiments
    assert experiment.num_trials() == 2 * 3 * 2 * 2
    plan = describe_plan(space)
    assert "24 trials = 2 variants x 3 seeds x 2 grid points x 2 samples" in plan
    assert "at most 2400 trial-iterations (100 per trial)" in plan and "source models: 3" in plan


def test_source_models_are_shared_across_targets_but_not_seeds(tmp_path):
    space = load_space(write(tmp_path, seeds=[0, 1], experiments={"a": {"set": {"data.target_city": "Rome"}},
                                                                  "b": {"set": {"data.target_city": "Rio"}}}))
    a, b = space.experiments
    assert source_key(space.source_config(a, 0)) == source_key(space.source_config(b, 0))
    assert source_key(space.source_config(a, 0)) != source_key(space.source_config(a, 1))
    assert space.source_config(a, 0).selection.metric == "source_val_miou"
    assert space.source_config(a, 0).model.multi_level  # multi-level variants share the source model


def test_source_stage_takes_the_data_and_model_but_not_the_optimisation_of_the_trials(tmp_path):
    space = load_space(write(tmp_path, set={"optim.lr": 0.01, "loss.lambda_target": 2.0, "eval.every": 7,
                                            "data.batch_size": 3, "model.aspp_branches": 4},
                             source={"set": {"optim.iterations": 50}}))
    (experiment,) = space.experiments
    trial, source = space.trial_config(experiment, "maxsquare", 0, {}), space.source_config(experiment, 0)
    base = load_config(space.base)
    assert (trial.optim.lr, trial.loss.lambda_target, trial.eval.every) == (0.01, 2.0, 7)
    assert (source.optim.lr, source.loss.lambda_target, source.eval.every) == (
        base.optim.lr, base.loss.lambda_target, base.eval.every)
    assert (source.data.batch_size, source.model.aspp_branches, source.optim.iterations) == (3, 4, 50)


# Every kind of mistake in a space file, with the message it must give (tests/test_errors.py runs each through
# the CLI too).
BAD_SPACES = [
    ({"seedz": [0]}, "seedz: unknown key; did you mean 'seeds'?"),
    ({"variants": ["maxsquares"]}, "variants: unknown variant 'maxsquares'"),
    ({"params": {"optim.lr": {"loguniform": [0, 0.1]}}}, "params.optim.lr.loguniform: bounds must be > 0"),
    ({"params": {"optim.lr": {"lognormal": [1, 2]}}}, "params.optim.lr.lognormal: unknown key"),
    ({"params": {"optim.lr": {"uniform": [0.2, 0.1]}}}, "lower bound must be below the upper bound"),
    ({"params": {"loss.lamda_target": {"choice": [0.1]}}},
     "loss.lamda_target: unknown key; did you mean 'loss.lambda_target'?"),
    ({"params": {"loss.threshold": {"uniform": [0.5, 1.5]}}},
     "params.loss.threshold=1.5: loss.threshold: 1.5 is out of range; it must be < 1"),
    ({"variants": {"mine": {"loss.target": "maxsquares"}}}, "variants.mine: loss.target: 'maxsquares'"),
    ({"metric": "miou"}, "metric: 'miou' is not a metric the trainer reports"),
    ({"metric": "oracle_miou"}, "metric: 'oracle_miou' reads the target test labels"),
    ({"search": {"algorithm": "optuna"}, "seeds": [0, 1]}, "optuna (TPE) explores the params of one variant"),
    ({"resources": {"gpu": 1.5}}, "resources.gpu: expected 0, a fraction of one GPU"),
    ({"scheduler": {"name": "asha", "grace_periods": 3}},
     "scheduler.grace_periods: unknown key; did you mean 'scheduler.grace_period'?"),
    ({"scheduler": {"name": "pbt", "perturbation_interval": 10}}, "pbt needs perturbation_interval and mutations"),
    ({"scheduler": {"name": "pbt", "perturbation_interval": 10, "synch": "yes",
                    "mutations": {"loss.lambda_target": {"choice": [0.1, 1.0]}}}}, "synch: expected true or false"),
    ({"source": {"set": {"optim.lr": -1}}}, "source: optim.lr: -1.0 is out of range"),
    ({"experiments": {"sweep": {"seeds": "all"}}}, "experiments.sweep.seeds: expected a list"),
    ({"scheduler": {"name": "asha", "grace_period": 200}},
     "scheduler.grace_period: 200 is more than the 100 iterations a trial runs"),
    ({"scheduler": {"name": "asha", "max_iterations": 400}},
     "scheduler.max_iterations: 400 is more than the 100 iterations a trial runs (optim.iterations)"),
    ({"experiments": {"../escaped": {}}}, "experiments.../escaped: '../escaped' is not allowed as a name"),
    ({"name": "/tmp/elsewhere"}, "name: '/tmp/elsewhere' is not allowed as a name"),
    ({"variants": {"a/b": {}}}, "variants.a/b: 'a/b' is not allowed as a name"),
]


@pytest.mark.parametrize(("space", "message"), BAD_SPACES)
def test_mistakes_fail_with_the_key(tmp_path, space, message):
    with pytest.raises(SpaceError) as error:
        load_space(write(tmp_path, **space))
    assert message in str(error.value)


def test_an_oracle_objective_needs_to_be_asked_for(tmp_path):
    (experiment,) = load_space(write(tmp_path, metric="oracle_miou", allow_oracle=True)).experiments
    assert experiment.oracle and experiment.mode == "max"
    assert "ORACLE" in describe_plan(load_space(write(tmp_path, metric="oracle_miou", allow_oracle=True)))


def test_dry_run_of_a_bad_space_exits_with_the_message(tmp_path, capsys):
    assert main(["run", str(write(tmp_path, seedz=[1])), "--dry-run"]) == 2
    assert "seedz: unknown key" in capsys.readouterr().err
