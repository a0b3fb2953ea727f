"""Every error path the tests build, run through the commands: one line on stderr, no traceback, exit 2."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from msl.cli import main as msl_main
from study.cli import main as study_main
from tests.conftest import tiny_config
from tests.test_config import BAD_OVERRIDES, MISSING_DATA_ROOTS
from tests.test_space import BAD_SPACES, write


def assert_one_line_error(capsys, code: int, prog: str, expected: str) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.startswith(f"{prog}: error: ") and "Traceback" not in captured.err, captured.err
    assert len(captured.err.splitlines()) == 1, captured.err
    assert expected in captured.err
    return captured.err


@pytest.fixture
def config_file(synth, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config(synth)))
    return path


@pytest.mark.parametrize(("overrides", "expected"), BAD_OVERRIDES)
def test_bad_values(config_file, tmp_path, capsys, overrides, expected):
    argv = ["train", str(config_file), "--out", str(tmp_path / "run")]
    code = msl_main(argv + [arg for override in overrides for arg in ("--set", override)])
    assert_one_line_error(capsys, code, "msl", expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("overrides", "expected"), MISSING_DATA_ROOTS)
def test_msl_train_refuses_a_run_without_its_data(config_file, tmp_path, capsys, overrides, expected):
    argv = ["train", str(config_file), "--out", str(tmp_path / "run")]
    code = msl_main(argv + [arg for override in overrides for arg in ("--set", override)])
    assert_one_line_error(capsys, code, "msl", f"{config_file}: {expected}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("space", "expected"), BAD_SPACES)
def test_bad_spaces(tmp_path, capsys, space, expected):
    assert_one_line_error(
        capsys, study_main(["run", str(write(tmp_path, **space)), "--dry-run"]), "msl-study", expected
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such config file"),
        ("optim: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("optim:\n  momentum: 1.5\n", "optim.momentum: 1.5 is out of range"),
    ],
)
def test_bad_config_files(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    assert_one_line_error(
        capsys, msl_main(["train", str(path), "--out", str(tmp_path / "run")]), "msl", expected
    )


def test_bad_checkpoints_and_weights(config_file, tmp_path, capsys):
    def evaluate(path):
        return msl_main(["eval", "--checkpoint", str(path)])

    missing, empty, hostile = tmp_path / "missing.pt", tmp_path / "empty.pt", tmp_path / "hostile.pt"
    assert_one_line_error(capsys, evaluate(missing), "msl", f"no checkpoint file at {missing}")
    empty.write_bytes(b"")
    assert_one_line_error(capsys, evaluate(empty), "msl", f"cannot read checkpoint {empty}")
    torch.save({"config": {}, "model": os.getcwd}, hostile)
    assert_one_line_error(capsys, evaluate(hostile), "msl", "could run code")
    bare = tmp_path / "bare.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bare)
    assert_one_line_error(capsys, evaluate(bare), "msl", "carries no config")
    # A weights file that does not fit the model: the message lists the keys on further lines.
    code = msl_main(
        ["train", str(config_file), "--out", str(tmp_path / "run"), "--set", f"model.weights={bare}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"msl: error: weights in {bare}") and "Traceback" not in err


def test_bad_run_and_study_directories(config_file, tmp_path, capsys):
    out = tmp_path / "never"
    assert_one_line_error(
        capsys,
        msl_main(["train", str(config_file), "--out", str(out), "--resume"]),
        "msl",
        "nothing to resume",
    )
    for command in ("report", "resume"):
        assert_one_line_error(
            capsys, study_main([command, str(tmp_path)]), "msl-study", "not a study directory"
        )
    assert_one_line_error(
        capsys,
        msl_main(
            [
                "train",
                str(config_file),
                "--out",
                str(tmp_path / "run"),
                "--set",
                "data.source_root=/nonexistent/gta5",
            ]
        ),
        "msl",
        "/nonexistent/gta5",
    )
    assert not (tmp_path / "run").exists()  # a run that cannot start leaves no folder to wedge the next try


def test_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, "-m", "study.cli", "report", str(tmp_path)]  # fails before any heavy import
    plain = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and plain.stderr.splitlines() == [
        f"msl-study: error: {tmp_path} is not a study directory (no study.json)"
    ]
    for extra_argument, environment in ((["--debug"], {}), ([], {"MSL_DEBUG": "1"})):
        debug = subprocess.run(
            command[:3] + extra_argument + command[3:],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **environment},
        )
        assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr
