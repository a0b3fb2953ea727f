"""How far a study's source models are: iterations done of those they train, from each run's progress.json
(`msl.run_dir`, rewritten every `runtime.log_every` iterations). The driver prints it with an ETA at least
every 30 s while they train; `msl-study status` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from msl.run_dir import RunDir
from study import layout


@dataclass
class SourceProgress:
    done: int  # iterations trained, over all models
    total: int  # iterations all models train
    complete: int  # models that ran every iteration
    models: int

    def line(self) -> str:
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        return (
            f"source models: {self.done}/{self.total} iterations{share}, {self.complete} of {self.models} "
            "complete"
        )


def source_progress(runs: dict[Path, int]) -> SourceProgress:
    """The progress of the runs in `runs` (run directory -> iterations it trains); one that has not written
    progress.json yet has done none."""
    done = {
        path: min((RunDir(path).read_progress() or {}).get("iteration", 0), n) for path, n in runs.items()
    }
    complete = sum(done[path] == n for path, n in runs.items())
    return SourceProgress(sum(done.values()), sum(runs.values()), complete, len(runs))


def study_source_progress(study_dir: Path) -> SourceProgress | None:
    """The progress of every source model in the study's sources/ that has written progress.json, or None
    where there is none (a study that uses `source.checkpoint`, or before the first write)."""
    folder = layout.sources_dir(study_dir)
    runs = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        progress = RunDir(path).read_progress()
        if progress is not None:
            runs[path] = int(progress["iterations"])
    return source_progress(runs) if runs else None
