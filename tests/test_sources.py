"""The source models (study.sources): how many CPUs each asks for, and when an existing one is reused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from msl.run_dir import RunDir
from study import layout
from study.progress import eta_words
from study.sources import _source_is_complete, _wait_for_sources, ensure_sources, source_cpus
from study.space import Resources, load_space, source_key
from tests import fakes
from tests.test_runner import _space_file


@pytest.mark.parametrize(
    ("resources", "cluster_cpus", "count", "expected"),
    [
        (Resources(cpu=1), 2.0, 3, 2 / 3),  # three models share two cores, all at once
        (Resources(cpu=1), 2.0, 2, 1),  # enough CPUs: what a trial asks for
        (Resources(cpu=1), 2.0, 4, 1),  # two full rounds: sharing the cores would be slower
        (Resources(cpu=1), 2.0, 5, 1),  # three rounds, the last half full: about what sharing costs
        (Resources(cpu=2), 8.0, 6, 8 / 6),  # a round of 4, then 2 of them: share
        (Resources(cpu=4), 64.0, 3, 4),
        (Resources(cpu=4, gpu=0.25), 8.0, 3, 4),  # GPU models keep the trials' resources
        (Resources(cpu=1), 2.0, 0, 1),
    ],
)
def test_source_models_share_the_cpus_unless_they_fill_their_rounds(resources, cluster_cpus, count, expected):
    assert source_cpus(resources, cluster_cpus, count) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("best", "logged", "complete"),
    [
        (True, [4, 8, 12], True),
        (True, [4, 8], False),  # killed before its last evaluation
        (False, [4, 8, 12], False),  # no best checkpoint
        (True, [], False),
        (True, None, False),  # no metrics.jsonl
    ],
)
def test_a_source_model_is_reused_only_when_it_ran_every_iteration(tmp_path, best, logged, complete):
    if best:
        fakes.checkpoint(tmp_path / "checkpoints" / "best.pt", 8)
    if logged is not None:
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i}) + "\n" for i in logged))
    assert _source_is_complete(tmp_path, 12) is complete


def test_a_source_model_two_experiments_share_is_reused_with_one_line(tmp_path, capsys):
    experiments = {"first": {"variants": ["source_only"]}, "second": {"variants": ["entropy"]}}
    space = load_space(
        _space_file(
            tmp_path, set={"data.source_root": "/a", "data.target_root": "/b"}, experiments=experiments
        )
    )
    cfg = space.source_config(space.experiments[0], 0)
    run_dir = layout.sources_dir(tmp_path) / source_key(cfg)
    fakes.checkpoint(run_dir / "checkpoints" / "best.pt", 10)
    (run_dir / "metrics.jsonl").write_text(json.dumps({"iteration": 10}) + "\n")
    checkpoints = ensure_sources(space, tmp_path)  # nothing to train: no Ray needed
    assert checkpoints == {name: {0: str(run_dir / "checkpoints" / "best.pt")} for name in experiments}
    assert capsys.readouterr().out.count("source model for seed 0: reusing") == 1


class _Task:
    def options(self, **resources):
        return self

    def remote(self, cfg, run_dir: str) -> str:
        return run_dir


class _SubmittingRay:
    """Stands in for `ray` in `ensure_sources`: a 2-CPU cluster whose tasks never run."""

    def cluster_resources(self) -> dict:
        return {"CPU": 2.0}

    def remote(self, function) -> _Task:
        return _Task()


@pytest.mark.parametrize(("seeds", "queued"), [([0, 1, 2, 3], 2), ([0, 1, 2], 0)])
def test_source_models_beyond_the_first_round_are_said_to_wait(tmp_path, monkeypatch, capsys, seeds, queued):
    """4 models on 2 CPUs train two at a time, and the lines say which wait; 3 share the CPUs, none waits."""
    monkeypatch.setattr("study.sources.ray", _SubmittingRay())
    monkeypatch.setattr("study.sources._wait_for_sources", lambda *args: None)
    space = load_space(
        _space_file(
            tmp_path,
            set={"data.source_root": "/a", "data.target_root": "/b"},
            experiments={"main": {"variants": ["source_only"], "seeds": seeds}},
        )
    )
    ensure_sources(space, tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if "source model for seed" in line]
    assert len(lines) == len(seeds)
    assert sum("queued until a CPU is free" in line for line in lines) == queued
    assert all("queued" not in line for line in lines[:2])


class _TrainingRay:
    """Stands in for `ray` in `_wait_for_sources`: each wait lets the time pass and the models train 10
    iterations each (their progress.json), and a model's task ends when it reaches its iterations."""

    def __init__(self, runs: dict[str, tuple[Path, int]]):
        self.runs, self.done = runs, dict.fromkeys(runs, 0)

    def wait(self, refs, num_returns, timeout):
        time.sleep(timeout)
        for key in refs:
            path, iterations = self.runs[key]
            self.done[key] = min(self.done[key] + 10, iterations)
            RunDir(path).write_progress(self.done[key], iterations, 1.0)
        ready = [key for key in refs if self.done[key] == self.runs[key][1]][:num_returns]
        return ready, [key for key in refs if key not in ready]

    def get(self, ref):
        return None


def test_the_driver_prints_the_source_models_progress_with_an_eta_while_they_train(
    tmp_path, monkeypatch, capsys
):
    runs = {"seed0": (tmp_path / "seed0", 40), "seed1": (tmp_path / "seed1", 60)}
    monkeypatch.setattr("study.sources.ray", _TrainingRay(runs))
    _wait_for_sources({key: key for key in runs}, dict(runs.values()), tmp_path / "driver.log", every_s=0.01)
    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if "source models:" in line]
    assert "source models: 20/100 iterations (20%), 0 of 2 complete" in progress[0] and "ETA ~" in progress[0]
    assert any("source models: 80/100 iterations (80%), 1 of 2 complete" in line for line in progress)
    assert (
        sum("source model seed0 done" in line for line in lines) == 1
        and "source model seed1 done" in lines[-1]
    )


def test_eta_words_extrapolate_the_pace_so_far_and_stay_silent_without_one():
    assert eta_words(done=30, elapsed_s=60, remaining=90) == ", ETA ~3.0 min"  # 0.5 units/s
    assert eta_words(done=0, elapsed_s=60, remaining=90) == ""  # no pace yet
    assert eta_words(done=30, elapsed_s=60, remaining=0) == ""  # nothing left
