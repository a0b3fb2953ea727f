"""Real Ray studies on the small synthetic benchmark: a head node started with `ray start`, logical GPUs
packed two trials per GPU, a failing trial, ASHA + Optuna, PBT, and a driver killed with SIGKILL then resumed.
Each scenario runs once (a module-scoped fixture); each test checks one behaviour in what it left. The
decisions behind them are unit-tested without Ray in test_runner.py."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from study import layout
from tests.conftest import tiny_config
from tests.ray_nodes import RAY_ENV, ray_node

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def space_file(path: Path, synth: Path, **extra) -> Path:
    space = {
        "name": "tiny",
        "config": tiny_config(synth)
        | {
            "optim": {"lr": 0.01, "iterations": 12, "poly_horizon": None},
            "eval": {"every": 4, "validator_images": 2, "max_images": 2},
        },
        "source": {"set": {"optim.iterations": 4}},
        "metric": "target_im",
        "retries": 0,
        **extra,
    }
    path.write_text(yaml.safe_dump(space))
    return path


def msl_study(*args, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "msl-study"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**RAY_ENV, **(env or {})},
    )


def read(study: Path, experiment: str, name: str) -> dict[str, dict]:
    return {
        d.name: json.loads((d / name).read_text())
        for d in layout.trials_dir(study, experiment).iterdir()
        if (d / name).is_file()
    }


@pytest.fixture(scope="module")
def cluster():
    """A real Ray head node with 4 CPUs and 2 logical GPUs, as `ray start --head` makes it on a cluster."""
    with ray_node(num_cpus=4, num_gpus=2) as address:
        yield address


@pytest.fixture(scope="module")
def head_study(cluster, synth, tmp_path_factory) -> tuple[str, Path]:
    """One study of four experiments on the head node, run once: (its output, its directory). The tests below
    each check one behaviour in what it left."""
    experiments = {
        "comparison": {
            "variants": ["source_only", "maxsquare", "iw_maxsquare", "hard"],
            "resources": {"cpu": 1, "gpu": 0.5},
        },
        "failing": {"variants": {"maxsquare": {}, "broken": {"optim.lr": 1.0e30}}},
        "pbt": {
            "variants": ["maxsquare"],
            "search": {"algorithm": "random", "num_samples": 2},
            "scheduler": {
                "name": "pbt",
                "perturbation_interval": 4,
                "quantile_fraction": 0.5,
                "synch": True,
                "mutations": {"loss.lambda_target": {"choice": [0.05, 0.5, 5.0]}},
            },
        },
        "sweep": {
            "variants": ["iw_maxsquare"],
            "params": {"loss.lambda_target": {"loguniform": [0.01, 1.0]}},
            "search": {"algorithm": "optuna", "num_samples": 4, "seed": 0},
            "scheduler": {"name": "asha", "grace_period": 4, "reduction_factor": 2},
            "resources": {"cpu": 1},
            "max_concurrent": 2,
        },
    }
    tmp_path = tmp_path_factory.mktemp("head")
    space = space_file(tmp_path / "space.yaml", synth, experiments=experiments)
    result = msl_study("run", space, "--storage", tmp_path / "studies", "--address", cluster)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, tmp_path / "studies" / "tiny"


def test_the_driver_prints_progress_with_an_eta(head_study):
    output, _ = head_study
    assert "comparison: 4/4 trials ended" in output and "ETA" in output


def test_a_diverging_trial_is_recorded_and_does_not_stop_the_study(head_study):
    _, study = head_study
    status = {name.split("_s0_")[0]: s for name, s in read(study, "failing", layout.STATUS_FILE).items()}
    assert status["broken"]["status"] == "diverged" and "non-finite" in status["broken"]["error"]
    assert status["maxsquare"]["status"] == "finished"
    assert all(s["status"] == "finished" for s in read(study, "comparison", layout.STATUS_FILE).values())


def test_half_a_gpu_per_trial_runs_four_trials_at_once_two_on_each_gpu(head_study):
    _, study = head_study
    trials = list(layout.trials_dir(study, "comparison").iterdir())
    infos = [json.loads((d / "run/run_info.json").read_text()) for d in trials]
    assert sorted(i["cuda_visible_devices"] for i in infos) == ["0", "0", "1", "1"]
    starts = [datetime.fromisoformat(i["started"]).timestamp() for i in infos]
    ends = [(d / layout.STATUS_FILE).stat().st_mtime for d in trials]
    assert max(starts) < min(ends), "the four trials did not all run at the same time"


def test_experiments_share_the_seeds_source_model(head_study):
    _, study = head_study
    trials = {**read(study, "sweep", layout.TRIAL_FILE), **read(study, "comparison", layout.TRIAL_FILE)}
    assert len({t["source_run"] for t in trials.values()}) == 1


def test_asha_stops_sweep_trials_only_at_its_rungs(head_study):
    _, study = head_study
    sweep = read(study, "sweep", layout.STATUS_FILE)
    assert len(sweep) == 4 and {s["status"] for s in sweep.values()} <= {"finished", "stopped"}
    assert {s["iterations"] for s in sweep.values()} <= {4, 8, 12}


def test_pbt_hands_a_checkpoint_over_and_every_trial_runs_to_the_end(head_study):
    _, study = head_study
    pbt = read(study, "pbt", layout.STATUS_FILE)
    assert len(pbt) == 2 and all(s["status"] == "finished" and s["iterations"] == 12 for s in pbt.values())
    assert any(
        (d / "run/checkpoints/restored.pt").exists() for d in layout.trials_dir(study, "pbt").iterdir()
    )


def test_the_plan_records_the_horizon_objective_and_effective_scheduler(head_study):
    _, study = head_study
    plan = json.loads((study / "sweep" / layout.PLAN_FILE).read_text())
    assert plan["max_iterations"] == 12 and plan["metric"] == "target_im" and not plan["oracle"]
    assert plan["scheduler"] == {
        "name": "asha",
        "grace_period": 4,
        "reduction_factor": 2.0,
        "max_iterations": None,
    }
    pbt = json.loads((study / "pbt" / layout.PLAN_FILE).read_text())["scheduler"]
    assert (pbt["quantile_fraction"], pbt["synch"]) == (0.5, True)


@pytest.fixture(scope="module")
def resumed_study(synth, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, dict[str, str], tuple]:
    """A study whose driver is killed with SIGKILL once one trial has ended and another has written a
    checkpoint, then resumed: (the resume's result, the study, the files of the trials ended before)."""
    tmp_path = tmp_path_factory.mktemp("resume")
    space = space_file(
        tmp_path / "space.yaml",
        synth,
        seeds=[0],
        max_concurrent=1,
        variants=["source_only", "maxsquare", "hard"],
    )
    study = tmp_path / "studies" / "tiny"
    driver = subprocess.Popen(
        [str(BIN / "msl-study"), "run", str(space), "--storage", str(tmp_path / "studies")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once one trial has ended and another has reported a checkpoint
        ended = read(study, "main", layout.STATUS_FILE) if layout.trials_dir(study, "main").exists() else {}
        running = (
            [
                d
                for d in layout.trials_dir(study, "main").glob("*")
                if d.name not in ended and (d / "run/checkpoints/last.pt").exists()
            ]
            if ended
            else []
        )
        if ended and running:
            break
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started: a power cut
    driver.wait()
    kept = ("run/metrics.jsonl", "run/run_info.json", layout.TRIAL_FILE)  # run_info.json: one entry per start
    finished_before = {
        name: {file: (layout.trials_dir(study, "main") / name / file).read_text() for file in kept}
        for name in ended
    }
    assert finished_before, "no trial ended before the deadline"
    # The driver is dead: `status` still shows the ended trials and the unended ones with their last write.
    ended_count = len(read(study, "main", layout.STATUS_FILE))
    unended = [d.name for d in running if not (d / layout.STATUS_FILE).exists()]
    status = msl_study("status", study), ended_count, unended
    return msl_study("resume", study), study, finished_before, status


def test_status_reads_a_study_whose_driver_was_killed(resumed_study):
    status, ended_count, unended = resumed_study[3]
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"{ended_count} finished" in status.stdout, status.stdout
    assert "driver: not running since" in status.stdout and "resume with `msl-study resume" in status.stdout
    assert all(f"interrupted: {name} at iteration" in status.stdout for name in unended), status.stdout
    assert "running:" not in status.stdout, status.stdout


def test_a_killed_study_resumes_without_an_error(resumed_study):
    result, study, _, _ = resumed_study
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    status = read(study, "main", layout.STATUS_FILE)
    assert len(status) == 3 and all(s["status"] == "finished" for s in status.values())


def test_trials_that_ended_before_the_kill_are_kept_as_they_were_and_never_started_again(resumed_study):
    _, study, finished_before, _ = resumed_study
    for name, files in finished_before.items():
        for file, text in files.items():
            assert (layout.trials_dir(study, "main") / name / file).read_text() == text, (name, file)


def test_every_evaluation_is_recorded_exactly_once(resumed_study):
    _, study, _, _ = resumed_study
    for name in read(study, "main", layout.STATUS_FILE):
        lines = (layout.trials_dir(study, "main") / name / "run/metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["iteration"] for line in lines] == [4, 8, 12], name


def test_the_interrupted_trial_continues_from_its_checkpoint(resumed_study):
    """Its run records a resume (from Tune's checkpoint, restored.pt, or its own newer last.pt) rather than a
    new start. (A restored.pt anywhere used to pass: the finished trial that was wrongly started again.)"""
    _, study, _, (_, _, unended) = resumed_study
    assert unended, "no trial was interrupted"
    for name in unended:
        run = layout.trials_dir(study, "main") / name / "run"
        assert json.loads((run / "run_info.json").read_text()).get("resumes"), name
        assert not list(run.parent.glob("run.failed-*")), name


CANARIES = {
    "AWS_SECRET_ACCESS_KEY": "canary-aws-5f1e",
    "AWS_SESSION_TOKEN": "canary-session-77a2",
    "HF_TOKEN": "canary-hf-90c3",
    "WANDB_API_KEY": "canary-wandb-3b8d",
    "MY_DB_PASSWORD": "canary-password-c41f",
}


def test_the_local_ray_instance_records_no_secret_from_the_environment(synth, tmp_path):
    """A tiny study on the local Ray instance msl starts, with secrets in the environment: no file that msl
    or Ray wrote (the study, Ray's temporary folder with its session logs) holds one of them."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths have a length limit
    try:
        space = space_file(tmp_path / "space.yaml", synth, seeds=[0], variants=["source_only"])
        env = {**CANARIES, "RAY_TMPDIR": str(ray_tmp)}
        result = msl_study("run", space, "--storage", tmp_path / "studies", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        written = [p for root in (tmp_path / "studies", ray_tmp) for p in root.rglob("*") if p.is_file()]
        assert any("runtime_env" in p.name for p in written), "Ray's logs were not under RAY_TMPDIR"
        leaks = [
            (str(path), name)
            for path in written
            for name, value in CANARIES.items()
            if value.encode() in path.read_bytes()
        ]
        assert not leaks, leaks
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_failing_source_model_is_one_line_and_the_corrected_file_runs_again(synth, tmp_path):
    """Every source image truncated: the data check passes (the files are there), the source models fail in
    their workers. The terminal gets one line naming the study's log, which holds the tracebacks; the study
    never started a trial, so the corrected space file runs under the same name (its dry run says so)."""
    broken = tmp_path / "broken"
    shutil.copytree(synth, broken)
    for image in (broken / "source" / "images").glob("*.png"):
        image.write_bytes(image.read_bytes()[:100])
    space = space_file(tmp_path / "space.yaml", synth, seeds=[0, 1], variants=["source_only"])
    raw = yaml.safe_load(space.read_text())
    raw["config"]["data"]["source_root"] = str(broken / "source")
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(raw))
    result = msl_study("run", tmp_path / "broken.yaml", "--storage", tmp_path / "studies", "--name", "tiny")
    study = tmp_path / "studies" / "tiny"
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]  # after Ray's own INFO line that it started
    assert line.startswith("msl-study: error: source model seed") and f"{study / layout.DRIVER_LOG}" in line
    assert "Traceback" in (study / layout.DRIVER_LOG).read_text()
    again = msl_study("run", space, "--storage", tmp_path / "studies", "--name", "tiny", "--dry-run")
    assert again.returncode == 0, again.stdout + again.stderr
