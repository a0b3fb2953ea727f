"""The layout of one training run's directory, and the one reader and writer of its evaluation records.

    RUN/
      config.yaml          the resolved config (msl.config.save_config)
      run_info.json        git revision, package versions, seed, device; one entry per resume (msl.runinfo)
      metrics.jsonl        one JSON object per evaluation: the keys of msl.objectives.METRIC_MODES, per-class
                           `*_iou` lists, `loss_*`, `lr`, `iteration`, `elapsed_s`, `time`, `is_best`
      progress.json        {"iteration", "iterations", "elapsed_s", "time"}: where a running run is, rewritten
                           every `runtime.log_every` iterations (what a study's driver and status show)
      tensorboard/         losses, learning rate, metrics and a few predictions
      checkpoints/last.pt  the latest evaluation's checkpoint (msl.checkpoint), what a resume continues from
      checkpoints/best.pt  the best evaluation's checkpoint under `selection`
      validator_probs/     the validator images' low-resolution softmax maps per evaluation (msl.probs_maps)

Every other module names these files through `RunDir`. The records hold NaN where a value is undefined (the
IoU of a class absent from labels and predictions); the file holds null there, since strict JSON has no NaN.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from msl.io import write_text_atomic

_CONFIG, _RUN_INFO, _METRICS, _PROGRESS = "config.yaml", "run_info.json", "metrics.jsonl", "progress.json"
_TENSORBOARD, _CHECKPOINTS, _VALIDATOR_PROBS = "tensorboard", "checkpoints", "validator_probs"
_ENTRIES = (_CONFIG, _RUN_INFO, _METRICS, _PROGRESS, _TENSORBOARD, _CHECKPOINTS, _VALIDATOR_PROBS)


class RunDir:
    """The paths of one run directory (naming them creates nothing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir:
        """The run directory that holds `checkpoint` (its last or best checkpoint)."""
        return cls(Path(checkpoint).parent.parent)

    @property
    def config(self) -> Path:
        return self.path / _CONFIG

    @property
    def run_info(self) -> Path:
        return self.path / _RUN_INFO

    @property
    def metrics(self) -> Path:
        return self.path / _METRICS

    @property
    def progress(self) -> Path:
        return self.path / _PROGRESS

    @property
    def tensorboard(self) -> Path:
        return self.path / _TENSORBOARD

    @property
    def validator_probs(self) -> Path:
        return self.path / _VALIDATOR_PROBS

    @property
    def checkpoints(self) -> Path:
        return self.path / _CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def restored(self) -> Path:
        """Where a checkpoint handed over from outside (a Ray Tune restore) is copied to resume from."""
        return self.checkpoints / "restored.pt"

    def check_can_start(self, resume: bool) -> None:
        """Never overwrite a previous run: a directory with a checkpoint, or with files a run does not write,
        needs `resume` (or another directory). One holding only what a run writes before its first checkpoint
        never got far enough to be resumed, so a new start may reuse it: a missing dataset or a kill before
        the first checkpoint never wedges it."""
        if resume or not self.path.exists():
            return
        entries = {entry.name for entry in self.path.iterdir()}
        checkpoints = self.checkpoints
        saved = checkpoints.is_dir() and any(not p.name.startswith(".") for p in checkpoints.iterdir())
        if saved or not entries <= set(_ENTRIES):
            raise FileExistsError(
                f"{self.path} already holds a run; pass --resume to continue it or choose --out"
            )

    def read_metrics(self) -> list[dict]:
        """The evaluation records, with NaN for null. A missing file has none; a truncated last line (a file
        being written) is ignored, while a broken line before the last one is an error naming the file and
        line."""
        if not self.metrics.is_file():
            return []
        lines = self.metrics.read_text().splitlines()
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(_null_to_nan(json.loads(line)))
            except json.JSONDecodeError as error:
                if number == len(lines):
                    break
                raise ValueError(f"{self.metrics}:{number} is not valid JSON: {error}") from None
        return records

    def write_metrics(self, records: list[dict]) -> None:
        """Rewrite the records atomically: a resumed run rewrites the checkpoint's history, so that it never
        duplicates or loses a line."""
        lines = (json.dumps(_nan_to_null(record), allow_nan=False) + "\n" for record in records)
        write_text_atomic(self.metrics, "".join(lines))

    def write_progress(self, iteration: int, iterations: int, elapsed_s: float) -> None:
        """Record that the run has done `iteration` of its `iterations`, `elapsed_s` seconds into this
        process's part of it."""
        progress = {
            "iteration": iteration,
            "iterations": iterations,
            "elapsed_s": elapsed_s,
            "time": time.time(),
        }
        write_text_atomic(self.progress, json.dumps(progress))

    def read_progress(self) -> dict | None:
        """The last `write_progress` record, or None while there is none (or it is being replaced)."""
        try:
            return json.loads(self.progress.read_text())
        except (OSError, json.JSONDecodeError):
            return None


def _nan_to_null(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_null(item) for key, item in value.items()}
    return [_nan_to_null(item) for item in value] if isinstance(value, list) else value


def _null_to_nan(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {key: _null_to_nan(item) for key, item in value.items()}
    return [_null_to_nan(item) for item in value] if isinstance(value, list) else value
