"""A real pruned study on a local Ray, run once: the same four random configurations run to the end (`full`)
and under synchronous successive halving (`pruned`), and an Optuna sweep of two seeds per configuration under
it (`sweep`). Checks that the replay of `full` stops the configurations where the real run did, that a trial
paused at a rung and resumed continues bit-identically to its uninterrupted run, what the Optuna journal and
TensorBoard's HParams table hold, and what the console names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from study import layout
from study.replay import Setting, reached, trial_order
from study.results import load_study
from tests.conftest import tiny_config
from tests.ray_nodes import RAY_ENV
from tests.test_tensorboard_hparams import _read

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
HALVING = {"name": "successive_halving", "grace_period": 1, "reduction_factor": 2}
SEARCHED = {"loss.lambda_target": {"loguniform": [0.01, 1.0]}}


@pytest.fixture(scope="module")
def pruned_study(synth, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    tmp_path = tmp_path_factory.mktemp("pruned")
    random = {"algorithm": "random", "num_samples": 4, "seed": 0}
    space = {
        "name": "pruned",
        "config": tiny_config(synth) | {"eval": {"every": 1, "validator_images": 2, "max_images": 2}},
        "source": {"set": {"optim.iterations": 4}},
        "metric": "target_im",
        "retries": 0,
        "variants": ["iw_maxsquare"],
        "params": SEARCHED,
        "experiments": {
            "full": {"search": random},
            "pruned": {"search": random, "scheduler": HALVING},
            "sweep": {
                "seeds": [0, 1],
                "seeds_per_sample": 2,
                "search": {**random, "algorithm": "optuna"},
                "scheduler": HALVING,
            },
        },
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    result = subprocess.run(
        [str(BIN / "msl-study"), "run", str(path), "--storage", str(tmp_path / "studies")],
        capture_output=True,
        text=True,
        timeout=900,
        env=RAY_ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result, tmp_path / "studies" / "pruned"


def _by_config(exp) -> dict[str, str]:
    return dict(zip(exp.trials["config"], exp.trials["trial_name"], strict=True))


def test_the_replay_of_the_full_run_stops_the_configurations_where_the_real_run_did(pruned_study):
    _, study = pruned_study
    results = load_study(study)
    full, pruned = results.experiment("full"), results.experiment("pruned")
    assert set(full.trials["config"]) == set(pruned.trials["config"])  # the same four random draws
    replayed = reached(full, Setting("successive_halving", 1, 2), concurrency=2)
    by_name = full.trials.set_index("trial_name")["config"]
    real = dict(zip(pruned.trials["config"], pruned.trials["iterations"], strict=True))
    assert {by_name[name]: replayed[name] for name in trial_order(full)} == real
    assert sorted(real.values()) == [1, 1, 2, 4]
    cli = subprocess.run(
        [
            str(BIN / "msl-study"),
            "replay",
            str(study),
            "--experiment",
            "full",
            "--scheduler",
            "successive_halving",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert "| successive_halving |" in cli.stdout and (study / "replay" / "full.csv").is_file()


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("time", "elapsed_s")} for line in lines]


def test_a_trial_resumed_after_waiting_at_a_rung_equals_its_uninterrupted_run(pruned_study):
    _, study = pruned_study
    results = load_study(study)
    full, pruned = _by_config(results.experiment("full")), _by_config(results.experiment("pruned"))
    resumed = [
        config
        for config, name in pruned.items()
        if (layout.trials_dir(study, "pruned") / name / "run" / "checkpoints" / "restored.pt").is_file()
    ]
    assert resumed, "no trial waited at a rung and continued from Tune's checkpoint"
    for config in resumed:
        ran = _records(layout.trials_dir(study, "pruned") / pruned[config] / "run")
        uninterrupted = _records(layout.trials_dir(study, "full") / full[config] / "run")
        assert ran == uninterrupted[: len(ran)], config


def test_the_optuna_journal_holds_the_pruned_trials_and_values_by_iteration(pruned_study):
    _, study = pruned_study
    journal = layout.experiment_dir(study, "sweep") / layout.OPTUNA_JOURNAL
    stored = optuna.load_study(study_name="sweep", storage=JournalStorage(JournalFileBackend(str(journal))))
    recorded = sorted((t.state.name, sorted(t.intermediate_values)) for t in stored.trials)
    expected = []
    for trial_dir in layout.trials_dir(study, "sweep").iterdir():
        status = layout.read_json(trial_dir / layout.STATUS_FILE)
        state = "COMPLETE" if status["status"] == "finished" else "PRUNED"
        expected.append((state, list(range(1, status["iterations"] + 1))))  # evaluated at every iteration
    assert recorded == sorted(expected)
    assert [s for s, _ in recorded] == ["COMPLETE", "PRUNED", "PRUNED", "PRUNED"]


def test_tensorboard_shows_every_run_in_one_hparams_table_and_the_console_says_how(pruned_study):
    result, study = pruned_study
    sessions = _read(study)
    experiments = [hparams["experiment"] for hparams, _ in sessions.values()]
    assert sorted(experiments) == ["full"] * 4 + ["pruned"] * 4 + ["sweep"] * 8  # two seeds per sweep trial
    assert all("selected_target_miou" in metrics for _, metrics in sessions.values())
    assert f"tensorboard --logdir {study}" in result.stdout
    assert "To visualize your results with TensorBoard" not in result.stdout + result.stderr
