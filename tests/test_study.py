"""Real Ray studies on the small synthetic benchmark: a head node started with `ray start`, logical GPUs packed
two trials per GPU, a failing trial, ASHA + Optuna, PBT, and a driver killed with SIGKILL then resumed."""

import json
import os
import signal
import subprocess
import sys
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


def msl_study(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "msl-study"), *map(str, args)], capture_output=True, text=True, timeout=600, env=RAY_ENV
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


def test_study_on_a_head_node_packs_two_trials_per_gpu_and_records_a_failure(cluster, synth, tmp_path):
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
    space = space_file(tmp_path / "space.yaml", synth, experiments=experiments)
    result = msl_study("run", space, "--storage", tmp_path / "studies", "--address", cluster)
    assert result.returncode == 0, result.stdout + result.stderr
    study = tmp_path / "studies" / "tiny"
    assert "comparison: 4/4 trials ended" in result.stdout and "ETA" in result.stdout

    status = {name.split("_s0_")[0]: s for name, s in read(study, "failing", layout.STATUS_FILE).items()}
    assert status["broken"]["status"] == "diverged" and "non-finite" in status["broken"]["error"]
    assert status["maxsquare"]["status"] == "finished"  # the failure did not stop the study
    assert all(s["status"] == "finished" for s in read(study, "comparison", layout.STATUS_FILE).values())

    # 0.5 GPU per trial: all four trials ran at once, two on each logical GPU.
    infos = [
        json.loads((d / "run/run_info.json").read_text())
        for d in layout.trials_dir(study, "comparison").iterdir()
    ]
    assert sorted(i["cuda_visible_devices"] for i in infos) == ["0", "0", "1", "1"]
    starts = [datetime.fromisoformat(i["started"]).timestamp() for i in infos]
    ends = [
        (d / layout.STATUS_FILE).stat().st_mtime for d in layout.trials_dir(study, "comparison").iterdir()
    ]
    assert max(starts) < min(ends), "the four trials did not all run at the same time"

    # Both experiments share the seed's source model; every UDA trial started from it.
    trials = {**read(study, "sweep", layout.TRIAL_FILE), **read(study, "comparison", layout.TRIAL_FILE)}
    assert len({t["source_run"] for t in trials.values()}) == 1
    sweep = read(study, "sweep", layout.STATUS_FILE)
    assert len(sweep) == 4 and {s["status"] for s in sweep.values()} <= {"finished", "stopped"}
    assert {s["iterations"] for s in sweep.values()} <= {4, 8, 12}
    # PBT: the weaker trial took over the stronger one's checkpoint and went on to the end.
    pbt = read(study, "pbt", layout.STATUS_FILE)
    assert len(pbt) == 2 and all(s["status"] == "finished" and s["iterations"] == 12 for s in pbt.values())
    assert any(
        (d / "run/checkpoints/restored.pt").exists() for d in layout.trials_dir(study, "pbt").iterdir()
    )
    plan = json.loads((study / "sweep" / layout.PLAN_FILE).read_text())
    assert plan["max_iterations"] == 12 and plan["metric"] == "target_im" and not plan["oracle"]


def test_a_study_whose_driver_is_killed_resumes_without_losing_or_redoing_work(synth, tmp_path):
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
    finished_before = {
        name: (layout.trials_dir(study, "main") / name / "run/metrics.jsonl").read_text() for name in ended
    }
    assert finished_before, "no trial ended before the deadline"
    # The driver is dead: `status` still shows the ended trials and the unended ones with their last write.
    status = msl_study("status", study)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"{len(read(study, 'main', layout.STATUS_FILE))} finished" in status.stdout, status.stdout
    unended = [d.name for d in running if not (d / layout.STATUS_FILE).exists()]
    assert all(f"running: {name} at iteration" in status.stdout for name in unended), status.stdout

    result = msl_study("resume", study)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    status = read(study, "main", layout.STATUS_FILE)
    assert len(status) == 3 and all(s["status"] == "finished" for s in status.values())
    for name, metrics in finished_before.items():  # finished trials kept as they were
        assert (layout.trials_dir(study, "main") / name / "run/metrics.jsonl").read_text() == metrics
    for name in status:  # every trial has each evaluation exactly once
        lines = (layout.trials_dir(study, "main") / name / "run/metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["iteration"] for line in lines] == [4, 8, 12]
    resumed = [
        d for d in layout.trials_dir(study, "main").iterdir() if (d / "run/checkpoints/restored.pt").exists()
    ]
    assert resumed, "no trial continued from its checkpoint"
