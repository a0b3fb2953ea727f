"""A run directory that no crash can wedge: a failed start can be started again, best.pt never falls behind
what last.pt says, a resume keeps the record of how the run started; and msl.run_dir's layout and records
alone."""

import json
import math

import pytest

import msl.trainer
from msl.checkpoint import load_checkpoint
from msl.config import ConfigError, load_config
from msl.data.files import DatasetError
from msl.run_dir import RunDir
from msl.trainer import train
from tests.conftest import tiny_config


def tiny(synth, **overrides):
    return load_config(tiny_config(synth), overrides)


def test_a_missing_dataset_leaves_no_run_directory(synth, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(DatasetError):
        train(tiny(synth, **{"data.source_root": str(tmp_path / "missing")}), run_dir)
    assert not run_dir.exists()
    with pytest.raises(ConfigError, match="^data.target_root: is empty, but stage uda"):
        train(tiny(synth, **{"stage": "uda", "data.target_root": ""}), run_dir)
    assert not run_dir.exists()
    train(tiny(synth, **{"optim.iterations": 2}), run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_a_run_killed_before_its_first_checkpoint_starts_again(synth, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(msl.trainer, "run_evaluation", killed)
        with pytest.raises(KeyboardInterrupt):
            train(tiny(synth), run_dir)
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "checkpoints").exists()
    train(tiny(synth, **{"optim.iterations": 2}), run_dir)
    assert [
        json.loads(line)["iteration"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ] == [2]
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tiny(synth, **{"optim.iterations": 2}), run_dir)


def test_a_folder_with_other_files_is_never_taken_for_a_run(synth, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tiny(synth), tmp_path)


class _Crash(Exception):
    pass


def test_a_crash_between_the_two_checkpoint_writes_never_loses_best(synth, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    saves = []
    save = msl.trainer.save_atomic

    def crash_on_fourth(payload, path):
        saves.append(path.name)
        if len(saves) == 4:  # the second file of the evaluation at iteration 4
            raise _Crash
        return save(payload, path)

    def every_record_best(best, record, cfg):
        return {"iteration": record["iteration"], "metric": "m", "value": 1.0}

    monkeypatch.setattr(msl.trainer, "_update_best", every_record_best)
    with monkeypatch.context() as patch:
        patch.setattr(msl.trainer, "save_atomic", crash_on_fourth)
        with pytest.raises(_Crash):
            train(tiny(synth), run_dir)
    named = load_checkpoint(run_dir / "checkpoints" / "last.pt")["best"]["iteration"]
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["iteration"] >= named
    train(tiny(synth), run_dir, resume_from=run_dir / "checkpoints" / "last.pt")
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["iteration"] == load_checkpoint(run_dir / "checkpoints" / "last.pt")["best"]["iteration"] == 4


def test_a_resume_keeps_how_the_run_started_and_appends_its_own_record(synth, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny(synth, **{"optim.iterations": 2}), run_dir)
    started = json.loads((run_dir / "run_info.json").read_text())
    for _ in range(2):
        train(
            tiny(synth, **{"optim.iterations": 2}), run_dir, resume_from=run_dir / "checkpoints" / "last.pt"
        )
    info = json.loads((run_dir / "run_info.json").read_text())
    assert {key: info[key] for key in started} == started
    assert len(info["resumes"]) == 2 and all(r["resumed"] > started["started"] for r in info["resumes"])


def test_a_run_killed_in_its_first_evaluation_starts_again(synth, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(msl.trainer, "save_atomic", killed)  # after the validator maps, before any checkpoint
        with pytest.raises(KeyboardInterrupt):
            train(tiny(synth), run_dir)
    assert (run_dir / "validator_probs").is_dir() and not (run_dir / "checkpoints" / "last.pt").exists()
    train(tiny(synth, **{"optim.iterations": 2}), run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file()


# --- msl.run_dir on its own ---------------------------------------------------------------------------------


def test_metrics_round_trip_with_null_for_nan(tmp_path):
    records = [
        {"iteration": 2, "oracle_miou": 0.25, "oracle_iou": [0.5, math.nan], "is_best": True},
        {"iteration": 4, "oracle_miou": math.nan, "oracle_iou": [math.nan, 0.0], "is_best": False},
    ]
    run = RunDir(tmp_path / "run")
    run.write_metrics(records)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[1]) == {
        "iteration": 4,
        "oracle_miou": None,
        "oracle_iou": [None, 0.0],
        "is_best": False,
    }
    back = run.read_metrics()
    assert [r["iteration"] for r in back] == [2, 4] and back[0]["oracle_iou"][0] == 0.5
    assert math.isnan(back[0]["oracle_iou"][1]) and math.isnan(back[1]["oracle_miou"])


def test_metrics_reader_ignores_a_truncated_last_line_and_a_missing_file(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_metrics() == []
    (tmp_path / "metrics.jsonl").write_text(
        '{"iteration": 2}\n\n{"iteration": 4}\n{"iteration": 6, "oracle_m'
    )
    assert run.read_metrics() == [{"iteration": 2}, {"iteration": 4}]


def test_a_folder_may_be_started_in_until_it_holds_a_checkpoint_or_foreign_files(tmp_path):
    run = RunDir(tmp_path / "run")
    run.check_can_start(resume=False)  # no folder yet
    for name in ("tensorboard", "checkpoints", "validator_probs"):
        (tmp_path / "run" / name).mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / ".last.pt.tmp").write_bytes(b"half")  # an interrupted write
    run.config.write_text("stage: uda\n")
    run.check_can_start(resume=False)
    run.last.write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds a run"):
        run.check_can_start(resume=False)
    run.check_can_start(resume=True)
    assert RunDir.of_checkpoint(run.last).path == run.path == RunDir.of_checkpoint(str(run.best)).path
