"""Atomic file writes: a temporary file beside the target, then a rename, so that a crash (a kill, a full
disk) never leaves a half-written file in the target's place. One helper for checkpoints, configs, metrics and
JSON."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary)` and rename the temporary file to `path`. On any failure the temporary file is
    removed (it may hold gigabytes on a full disk) and an OSError names `path` and the cause."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, (OSError, RuntimeError)):  # torch.save reports a full disk as a RuntimeError
            raise OSError(f"cannot write {path}: {_cause(error)}") from error
        raise
    return path


def _cause(error: BaseException) -> str:
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, RuntimeError) or getattr(error, "errno", None) in (
        errno.ENOSPC,
        errno.EFBIG,
        errno.EDQUOT,
    ):
        message += " (is the disk full?)"
    return message


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda temporary: temporary.write_text(text))
