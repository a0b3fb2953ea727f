"""`msl-study status` on a fake study directory caught mid-run (written through `study.layout`, file times
set): one trial of each state, partly written files, and the same directory after its driver died.
Expectations are counted by hand from what the fixture writes."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from msl.run_dir import RunDir
from study import layout
from study.cli import main
from study.heartbeat import DEAD_AFTER_S, heartbeat, read_driver
from study.status import QUIET_MIN_S, format_status, study_status
from tests import fakes

BIN = Path(sys.executable).parent

START = 1_700_000_000.0  # when the experiment started (plan.json's mtime)
NOW = START + 1000.0
PLANNED = 9
TRACEBACK = "Traceback (most recent call last):\n  File 'x.py'\nRuntimeError: CUDA out of memory"


def _touch(path, when: float) -> None:
    os.utime(path, (when, when))


def _trial(study, name: str, oracles: tuple[float, ...], status: dict | None, wrote: float, **extra) -> None:
    records = [fakes.record(10 * (i + 1), oracle, 0.6, 0.7) for i, oracle in enumerate(oracles)]
    for record in records:
        record.update(extra)
    fakes.write_trial(
        study, "sweep", name, variant="maxsquare", seed=0, params={}, status=status, records=records
    )
    directory = layout.trials_dir(study, "sweep") / name
    for path in [directory / layout.TRIAL_FILE, *directory.rglob("metrics.jsonl")]:
        _touch(path, wrote)


@pytest.fixture
def study(tmp_path):
    study = tmp_path / "midrun"
    layout.write_json(study / layout.STUDY_FILE, {"name": "midrun", "experiments": ["sweep", "later"]})
    plan = fakes.plan(
        "sweep",
        metric="target_entropy",
        mode="min",
        variants=["maxsquare"],
        seeds=[0],
        searched={},
        scheduler="asha",
        num_trials=PLANNED,
    )
    layout.write_plan(study, plan)
    _touch(layout.plan_file(study, "sweep"), START)
    recent = NOW - 30
    _trial(study, "t_finished", (0.30, 0.34, 0.36), fakes.finished(), recent)
    stopped = {
        "status": "stopped",
        "iterations": 10,
        "error": None,
        "reason": "stopped by the asha scheduler",
    }
    _trial(study, "t_stopped", (0.20,), stopped, recent)
    # The best objective of all (entropy 0.1), but diverged: never "best so far".
    diverged = {
        "status": "diverged",
        "iterations": 20,
        "error": "loss_target is nan at iteration 20",
        "reason": "diverged: a loss or the objective became NaN or infinite",
    }
    _trial(study, "t_diverged", (0.9, 0.9), diverged, recent)
    error = {"status": "error", "iterations": 0, "error": TRACEBACK, "reason": "raised an error"}
    _trial(study, "t_error", (), error, recent)
    _trial(study, "t_running", (0.31, 0.35), None, recent)  # + a truncated line: being written
    metrics = RunDir(layout.trials_dir(study, "sweep") / "t_running" / layout.RUN_DIR).metrics
    with metrics.open("a") as file:
        file.write('{"iteration": 30, "oracle_mi')
    _touch(metrics, recent)
    _trial(study, "t_silent", (0.25,), None, NOW - 2 * QUIET_MIN_S)  # silent far longer than its pace
    # Silent as long, but its evaluations take 1000 s each: still running.
    _trial(study, "t_slow", (0.26,), None, NOW - 2 * QUIET_MIN_S, elapsed_s=1000.0)
    starting = layout.trials_dir(study, "sweep") / "t_starting"  # trial.json not renamed into place yet
    starting.mkdir(parents=True)
    (starting / f".{layout.TRIAL_FILE}.tmp").write_text('{"trial_na')
    _touch(starting, recent)
    return study


def test_status_counts_states_iterations_eta_best_and_errors(study):
    status = study_status(study, now=NOW)
    assert status.not_started == ["later"]
    (exp,) = status.experiments
    assert exp.counts == {
        "finished": 1,
        "stopped": 1,
        "error": 1,
        "diverged": 1,
        "running": 3,  # t_running, t_slow, t_starting
        "interrupted": 1,  # t_silent
    }
    # Done: 30 + 10 + 20 + 0 + 20 (t_running's last whole line) + 10 + 10 + 0.
    assert exp.done == 100
    # To go: the unended trials up to 30 (10 + 20 + 20 + 30) and the planned trial not started (30).
    assert exp.remaining == 110
    assert exp.elapsed_s == pytest.approx(1000.0)
    assert exp.eta_s == pytest.approx(110 * 1000.0 / 100)
    assert exp.best["trial_name"] == "t_finished" and exp.best["iteration"] == 30
    assert exp.best["value"] == pytest.approx(1 - 0.36)
    failed = {trial["trial_name"]: trial for trial in exp.failed}
    assert failed["t_error"]["message"] == "RuntimeError: CUDA out of memory"
    assert failed["t_diverged"]["message"] == "loss_target is nan at iteration 20"
    running = {trial["trial_name"]: trial for trial in exp.running}
    assert running["t_silent"]["status"] == "interrupted"
    assert running["t_silent"]["quiet_s"] == pytest.approx(2 * QUIET_MIN_S)
    assert running["t_running"]["iterations"] == 20 and running["t_running"]["quiet_s"] == pytest.approx(30)

    text = format_status(status)
    assert (
        "9 planned, 8 started: 1 finished, 1 stopped, 1 error, 1 diverged, 3 running, 1 interrupted" in text
    )
    assert "100 done (48%), at most 110 to go" in text and "ETA 18.3 min" in text
    assert "best target_entropy so far: 0.6400 by t_finished at iteration 30" in text
    assert "interrupted: t_silent at iteration 10 of 30, no write for 20.0 min" in text
    assert "experiment later: not started" in text


def test_after_the_driver_died_running_trials_are_interrupted_and_there_is_no_eta(study):
    later = NOW + 100 * QUIET_MIN_S
    (exp,) = study_status(study, now=later).experiments
    assert exp.counts["running"] == 0 and exp.counts["interrupted"] == 4
    assert exp.eta_s is None
    assert exp.elapsed_s == pytest.approx(1000.0 - 30)  # to the last write, not to now
    text = format_status(study_status(study, now=later))
    assert f"`msl-study resume {study}` continues it" in text and "ETA" not in text


def test_cli_prints_the_status_and_names_a_directory_that_is_not_a_study(study, tmp_path, capsys):
    assert main(["status", str(study)]) == 0
    assert "experiment sweep: objective target_entropy (min, label-free)" in capsys.readouterr().out
    assert main(["status", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a study directory" in capsys.readouterr().err


def test_a_study_whose_first_trial_has_not_evaluated_yet(tmp_path):
    study = tmp_path / "fresh"
    layout.write_json(study / layout.STUDY_FILE, {"name": "fresh", "experiments": ["sweep"]})
    plan = fakes.plan(
        "sweep",
        metric="target_im",
        mode="min",
        variants=["maxsquare"],
        seeds=[0],
        searched={},
        scheduler="fifo",
        num_trials=2,
    )
    layout.write_plan(study, plan)
    fakes.write_trial(study, "sweep", "t0", variant="maxsquare", seed=0, params={}, status=None, records=[])
    (exp,) = study_status(study).experiments
    assert exp.counts["running"] == 1 and exp.done == 0 and exp.remaining == 60
    assert exp.best is None and exp.eta_s is None
    assert "best target_im so far: none reported yet" in format_status(study_status(study))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _driver(study, state: str, pid: int, beat: float, started: float = START) -> None:
    info = {"state": state, "pid": pid, "hostname": socket.gethostname(), "started": started, "time": beat}
    layout.write_json(study / layout.DRIVER_FILE, info)


def test_a_killed_driver_is_seen_at_once_and_its_running_trials_are_interrupted(study):
    _driver(study, "running", _dead_pid(), beat=NOW - 5)  # a fresh heartbeat, but its process is gone
    status = study_status(study, now=NOW)
    (exp,) = status.experiments
    assert exp.counts["running"] == 0 and exp.counts["interrupted"] == 4 and exp.eta_s is None
    text = format_status(status)
    since = datetime.fromtimestamp(NOW - 5).strftime("%H:%M")
    assert f"driver: not running since {since} " in text
    assert text.splitlines()[1].endswith(f"; resume with `msl-study resume {study}`")
    _driver(study, "running", os.getpid(), beat=NOW - 5)  # alive: the trials' own silence decides
    assert study_status(study, now=NOW).experiments[0].counts["running"] == 3
    assert f"driver: running since {datetime.fromtimestamp(START):%H:%M}" in format_status(
        study_status(study, now=NOW)
    )
    _driver(study, "running", os.getpid(), beat=NOW - DEAD_AFTER_S - 1)  # no heartbeat for too long
    assert "driver: not running since" in format_status(study_status(study, now=NOW))


def test_the_heartbeat_beats_while_the_driver_runs_and_says_when_it_ended(tmp_path):
    with heartbeat(tmp_path, interval_s=0.05):
        first = layout.read_json(tmp_path / layout.DRIVER_FILE)
        time.sleep(0.3)
        assert layout.read_json(tmp_path / layout.DRIVER_FILE)["time"] > first["time"]
        assert read_driver(tmp_path, time.time()).state == "running"
    assert read_driver(tmp_path, time.time()).state == "ended"
    assert read_driver(tmp_path / "nowhere", time.time()) is None


def test_status_shows_the_source_models_progress_while_they_train(study):
    for key, iteration in (("seed0-a", 600), ("seed1-b", 634)):
        RunDir(layout.sources_dir(study) / key).write_progress(iteration, 1120, 60.0)
    text = format_status(study_status(study, now=NOW))
    assert "source models: 1234/2240 iterations (55%), 0 of 2 complete" in text
    assert "experiment later: not started (the source models train first)" in text


def test_a_confirmation_names_the_configuration_it_confirms(tmp_path):
    study = tmp_path / "confirmed"
    layout.write_json(study / layout.STUDY_FILE, {"name": "confirmed", "experiments": ["confirm"]})
    plan = fakes.plan(
        "confirm",
        metric="source_val_miou",
        mode="max",
        variants=["maxsquare"],
        seeds=[5],
        searched={},
        scheduler="fifo",
        num_trials=1,
        confirm={"from": "tune", "selected": {"maxsquare": {"loss.lambda_target": 3.0}}},
    )
    layout.write_plan(study, plan)
    records = [fakes.record(10, 0.3, 0.6, 0.7)]
    params = {"loss.lambda_target": 3.0}
    fakes.write_trial(
        study, "confirm", "t0", variant="maxsquare", seed=5, params=params, status=None, records=records
    )
    assert "(variant maxsquare, lambda_target=3)" in format_status(study_status(study))


def test_a_tuning_that_chooses_by_another_validator_says_so(study):
    plan = layout.read_plan(study, "sweep")
    plan.choose_by = "ensemble_agreement"
    layout.write_plan(study, plan)
    assert "; configurations chosen by ensemble_agreement when it ends" in format_status(study_status(study))


def test_status_imports_no_plotting_optuna_scipy_or_torch():
    """`msl-study status` prints a table: it must not pay for (nor depend on) the report's heavy libraries,
    nor torch (msl.objectives holds the metrics' directions without it)."""
    heavy = ("matplotlib", "optuna", "scipy", "torch")
    code = f"import study.status, sys; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_status_answers_in_under_two_seconds(study):
    """Counted in the CPU seconds the command uses (user and system), which other processes on a loaded
    machine do not inflate as they do its wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([str(BIN / "msl-study"), "status", str(study)], capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stderr
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 2.0
