"""What runs inside a trial's Ray worker (study.worker), without Ray: where a restarted trial continues."""

from __future__ import annotations

import pytest
from ray import tune

from msl.checkpoint import load_checkpoint
from study.worker import _resume_point
from tests import fakes


@pytest.mark.parametrize(
    ("own", "handed", "own_ok", "expected"),
    [
        (None, None, True, None),  # a fresh trial
        (8, None, True, 8),  # the driver died after the trial wrote iteration 8, before Tune recorded it
        (8, 4, True, 8),  # its own checkpoint is newer than Tune's: no finished evaluation is redone
        (4, 8, True, 8),  # a retry from Tune's newer checkpoint
        (8, 4, False, 4),  # PBT: the donor's checkpoint, though older than the trial's own
        (8, None, False, None),  # PBT without a checkpoint handed over: start again
    ],
)
def test_a_restarted_trial_continues_from_the_newest_checkpoint_it_may_use(
    tmp_path, own, handed, own_ok, expected
):
    run_dir = tmp_path / "run"
    if own is not None:
        fakes.checkpoint(run_dir / "checkpoints" / "last.pt", own)
    restored = None
    if handed is not None:
        fakes.checkpoint(tmp_path / "tune" / "last.pt", handed)
        restored = tune.Checkpoint.from_directory(str(tmp_path / "tune"))
    point = _resume_point(run_dir, restored, own_checkpoint_ok=own_ok)
    assert (point and load_checkpoint(point)["iteration"]) == expected
    if handed is not None:  # Tune's checkpoint is copied into the run, whichever is taken
        assert load_checkpoint(run_dir / "checkpoints" / "restored.pt")["iteration"] == handed
