"""Training checkpoints: everything needed to continue a run exactly, written atomically, read without ever
running code from the file (torch's weights-only unpickler, with numpy's RNG state types allowed)."""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msl.io import write_atomic

# What numpy's RNG state (stored in our training checkpoints) needs beyond torch.load's weights-only
# allowlist.
_NUMPY_RNG_STATE_GLOBALS = [np.zeros(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]
CHECKPOINT_KEYS = ("model", "optimizer", "iteration", "rng", "config", "history", "best")


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be read, or holds what it may not; the message names it."""


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(payload: dict[str, Any], path: Path) -> Path:
    """`torch.save` through `msl.io.write_atomic`: a crash never leaves a half-written file."""
    return write_atomic(path, lambda temporary: torch.save(payload, temporary))


def load_file(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> Any:
    """The contents of a torch file (a checkpoint or a weights file), loaded on the CPU with the weights-only
    unpickler: tensors, plain containers and numbers, numpy arrays; anything that could run code is refused.
    `mmap`: the tensors map the file instead of being read (milliseconds for any model size), for a caller
    that reads only the other entries. Every failure is a CheckpointError naming the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    try:
        with torch.serialization.safe_globals(_NUMPY_RNG_STATE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError) as error:
        if unsafe := re.search(r"unsupported (?:global: )?GLOBAL ([\w.]*\w)", str(error), re.IGNORECASE):
            raise CheckpointError(
                f"{what} {path} holds {unsafe[1]}, not only tensors and plain data; it could run "
                "code, so it is not loaded"
            ) from None
        cause = (
            re.sub(r"\s+", " ", str(error).split("Check the documentation")[0]).strip()
            or type(error).__name__
        )
        raise CheckpointError(
            f"cannot read {what} {path} (truncated, empty or not a torch file?): {cause[-200:]}"
        ) from None


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """A training checkpoint written by `msl.trainer`, checked to hold every entry a resume needs (`mmap`: see
    `load_file`)."""
    payload = load_file(path, mmap=mmap)
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise CheckpointError(f"{path} is not an msl training checkpoint: it lacks {', '.join(missing)}")
    return payload
