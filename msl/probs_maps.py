"""Low-resolution softmax maps of the validator images, one file per evaluation of a run.

The trainer keeps, at each evaluation, every validator image's softmax area-downsampled to `eval.probs_size`
in float16 (`msl.evaluate.LabelFreeValidators`), and writes them to `<run>/validator_probs/<iteration>.npy` as
an (N, C, h, w) array: N validator images in their fixed order, C classes. The study layer compares
checkpoints and seeds on these maps (`study.selection`). Disk per evaluation: N x C x h x w x 2 bytes (100
images, 19 classes, 32 x 16: 1.9 MB). Plain .npy, read without pickle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msl.io import write_atomic
from msl.run_dir import RunDir


def save_probs(run_dir: str | Path, iteration: int, probs: np.ndarray) -> Path:
    """Write one evaluation's (N, C, h, w) maps atomically (`msl.io.write_atomic`)."""

    def write(temporary: Path) -> None:
        with temporary.open("wb") as file:  # a file object: np.save would add `.npy` to a path
            np.save(file, probs.astype(np.float16), allow_pickle=False)

    return write_atomic(RunDir(run_dir).validator_probs / f"{iteration:08d}.npy", write)


def saved_iterations(run_dir: str | Path) -> dict[int, Path]:
    """{iteration: path} of the maps a run directory holds (none: empty)."""
    directory = RunDir(run_dir).validator_probs
    if not directory.is_dir():
        return {}
    return {int(path.stem): path for path in sorted(directory.glob("*.npy")) if path.stem.isdigit()}


def load_probs(path: str | Path) -> np.ndarray:
    """One evaluation's (N, C, h, w) maps as float32."""
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except ValueError as error:
        raise ValueError(
            f"{path}: not a validator probability map ({error}); delete it and re-evaluate"
        ) from None
