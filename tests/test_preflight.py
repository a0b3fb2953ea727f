"""What `msl-study run` and `--dry-run` refuse before Ray starts (study.preflight): a missing dataset root or
split, resources beyond this machine, a study name that holds a started study. Ray's `init` is replaced by
one that fails the test, so that a check that came too late shows."""

from __future__ import annotations

import pytest
import ray
import yaml

from study import layout
from study.cli import main
from study.runner import create_study, expand_paths
from study.space import load_space
from tests.conftest import tiny_config


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    def init(*args, **kwargs):
        raise AssertionError("Ray was started before the checks")

    monkeypatch.setattr(ray, "init", init)


def _space(tmp_path, synth, **extra):
    config = tiny_config(synth)
    space = {"name": "tiny", "config": config, "metric": "target_im", "variants": ["source_only"], **extra}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_a_wrong_data_path_is_refused_before_ray_by_run_and_dry_run(tmp_path, synth, capsys, dry_run):
    path = _space(tmp_path, synth, set={"data.target_root": str(tmp_path / "nowhere")})
    assert main(["run", str(path), "--storage", str(tmp_path / "studies"), *dry_run]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"msl-study: error: experiments.main: source stage: dataset root not found: {tmp_path / 'nowhere'}; "
        "fix the space's data settings (msl data verify checks a tree)"
    )
    assert not (tmp_path / "studies").exists()


def test_a_split_without_images_is_refused_before_ray(tmp_path, synth, capsys):
    path = _space(tmp_path, synth, set={"data.target_val_split": "test"})  # the synthetic target has none
    assert main(["run", str(path), "--storage", str(tmp_path / "studies"), "--dry-run"]) == 2
    assert "split 'test' not found" in capsys.readouterr().err


def test_resources_beyond_this_machine_are_refused_before_ray(tmp_path, synth, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = _space(tmp_path, synth, resources={"cpu": 4096})
    assert main(["run", str(path), "--storage", str(tmp_path / "studies")]) == 2
    assert "main.resources: a trial asks for 4096 CPU and 0 GPU on one node" in capsys.readouterr().err


def test_a_started_study_blocks_its_name_and_one_that_never_started_a_trial_does_not(tmp_path, synth, capsys):
    path = _space(tmp_path, synth)
    study = create_study(
        expand_paths(load_space(path)), storage=tmp_path / "studies"
    )  # stopped before a trial
    run = ["run", str(path), "--storage", str(tmp_path / "studies"), "--dry-run"]
    assert main(run) == 0
    layout.plan_file(study, "main").parent.mkdir(parents=True, exist_ok=True)
    layout.plan_file(study, "main").write_text("{}")  # its first experiment started
    assert main(run) == 2
    assert f"{study} already holds a study that ran experiment 'main'" in capsys.readouterr().err
