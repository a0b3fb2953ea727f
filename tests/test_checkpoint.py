"""Reading and writing run files safely: no code runs from a checkpoint, every bad file names itself, a full
disk leaves neither a half-written file nor a temporary one."""

import errno
import os
import subprocess
import sys
import textwrap
from functools import partial

import pytest
import torch

from msl.checkpoint import CheckpointError, load_checkpoint, load_file, save_atomic
from msl.config import load_config, read_yaml, save_config
from msl.io import write_atomic, write_text_atomic


class _RunsCode:
    """Pickles to a call of `os.mkdir`: what a hostile checkpoint would do with `os.system`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "last.pt"
    torch.save(
        {
            "model": {},
            "optimizer": {},
            "iteration": 1,
            "rng": _RunsCode(marker),
            "config": {},
            "history": [],
            "best": None,
        },
        path,
    )
    for load in (load_checkpoint, load_file, partial(load_checkpoint, mmap=True)):
        with pytest.raises(CheckpointError, match=rf"{path} holds (posix|os).mkdir.*could run code"):
            load(path)
    assert not marker.exists()


@pytest.mark.parametrize("cut", [lambda data: b"", lambda data: data[:300], lambda data: b"not a torch file"])
def test_an_empty_or_truncated_checkpoint_names_the_file(tmp_path, cut):
    path = tmp_path / "last.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(cut(path.read_bytes()))
    with pytest.raises(CheckpointError, match=rf"cannot read checkpoint {path}"):
        load_checkpoint(path)


def test_a_file_without_the_training_entries_is_not_resumed(tmp_path):
    torch.save({"model": {}}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="lacks optimizer, iteration"):
        load_checkpoint(tmp_path / "weights.pt")


def test_a_memory_mapped_read_gives_the_same_entries_and_refuses_a_truncated_file(tmp_path):
    """How the study runner reads a checkpoint's iteration without reading its weights."""
    payload = {"model": {"w": torch.arange(6.0)}, "optimizer": {}, "iteration": 8, "rng": {}}
    payload |= {"config": {"optim": {"lr": 0.1}}, "history": [{"iteration": 8}], "best": None}
    path = save_atomic(payload, tmp_path / "last.pt")
    mapped = load_checkpoint(path, mmap=True)
    assert (mapped["iteration"], mapped["history"], mapped["config"]) == (
        8,
        [{"iteration": 8}],
        payload["config"],
    )
    assert torch.equal(mapped["model"]["w"], payload["model"]["w"])
    del mapped  # its tensors map the file, which is cut next
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=rf"cannot read checkpoint {path}"):
        load_checkpoint(path, mmap=True)


def _write_under_file_size_limit(tmp_path, code: str) -> subprocess.CompletedProcess:
    """Run `code` with the file-size limit at 4 kB: writes past it fail as on a full disk (EFBIG)."""
    script = textwrap.dedent("""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    """) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_a_full_disk_names_the_checkpoint_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_atomic({"iteration": 1}, path)
    before = path.read_bytes()
    result = _write_under_file_size_limit(
        tmp_path,
        f"""
        import torch
        from msl.checkpoint import save_atomic
        try:
            save_atomic({{"model": torch.zeros(100_000)}}, __import__("pathlib").Path({str(path)!r}))
        except OSError as error:
            print(error)
    """,
    )
    assert f"cannot write {path}" in result.stdout and "disk full" in result.stdout, result.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_config_rewrite_is_atomic(tmp_path):
    path = tmp_path / "config.yaml"
    save_config(load_config(None), path)
    before = path.read_text()
    result = _write_under_file_size_limit(
        tmp_path,
        f"""
        from msl.config import load_config, save_config
        cfg = load_config(None, {{"data.source_root": "x" * 10_000}})
        try:
            save_config(cfg, {str(path)!r})
        except OSError as error:
            print(error)
    """,
    )
    assert f"cannot write {path}" in result.stdout, result.stderr
    assert path.read_text() == before
    assert read_yaml(path)["data"]["source"] == "gta5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_a_write_that_fails_halfway_leaves_the_old_file(tmp_path):
    path = write_text_atomic(tmp_path / "status.json", "old\n")

    def half_then_disk_full(temporary):
        temporary.write_text("ne")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"cannot write .*status\.json: .*No space left.*is the disk full\?"):
        write_atomic(path, half_then_disk_full)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]

    def interrupted(temporary):
        temporary.write_text("ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # not an OSError: passes through unchanged
        write_atomic(path, interrupted)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
