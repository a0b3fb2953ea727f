"""Source models at once or in full rounds: the wall time of N source stages on this machine's cores.

A study trains its source models before its trials (study/sources.py). On a CPU-only machine they can all
start at once, sharing the cores (N processes on C cores), or run C at a time in rounds. Sharing avoids idle
cores when N is not a multiple of C; rounds avoid the slowdown of more processes than cores (caches and memory
bandwidth shared, switches). This script measures both for each N: the source stage of synth.yaml as a study
trains it (aux head, 1 thread per process), seeds 0..N-1, in fresh processes (`synth_runs.run_jobs`, which a
Ray task pool resembles: one process per model at a time, imports paid once per process).

Usage: python benchmarks/source_waves.py [--models 3 4] [--work DIR] [--report FILE]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from pathlib import Path

from synth_runs import DEFAULT_SHIFT, Job, Report, header, run_jobs, source_overrides, synthetic_set


def wall_s(data: Path, work: Path, models: int, parallel: int) -> float:
    """Seconds to train `models` source models from scratch, `parallel` processes at a time."""
    shutil.rmtree(work, ignore_errors=True)
    jobs = [Job(f"seed{seed}", work / f"seed{seed}", source_overrides(data, seed)) for seed in range(models)]
    start = time.perf_counter()
    run_jobs(jobs, parallel)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--work", type=Path, default=Path("runs/source_waves"))
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    data = synthetic_set(args.work, DEFAULT_SHIFT)
    report = Report()
    header("Source models at once or in full rounds", report.say)
    report.say(
        f"Wall seconds to train N source models on {cores} cores (shift {DEFAULT_SHIFT:g}, seeds 0..N-1)."
    )
    report.say()
    report.say(f"| models | all at once | in rounds of {cores} | rounds | at once / in rounds |")
    report.say("|---:|---:|---:|---:|---:|")
    for models in args.models:
        at_once = wall_s(data, args.work / "runs", models, models)
        rounds = wall_s(data, args.work / "runs", models, cores)
        ratio = at_once / rounds
        report.say(f"| {models} | {at_once:.1f} | {rounds:.1f} | {math.ceil(models / cores)} | {ratio:.2f} |")
    report.write(args.report)


if __name__ == "__main__":
    main()
