"""Where one UDA trial's and one source model's time goes, measured inside the trainer (one thread, as a study
runs its trials).

Runs `msl.trainer.train` under cProfile on the embedded benchmark (a source stage of `--source-iterations`,
then the quickstart's UDA stage from it with `--evaluations` evaluations, twice in one process, as a study's
reused trial worker runs trial after trial) and prints, per run, the seconds of its parts: building the data,
the training iterations (their forward, loss, backward and optimiser step), each part of an evaluation (source
val, target val, label-free validators, saved softmax maps, TensorBoard images, checkpoints, metrics file).
The Ray side of a trial (worker start, imports) is timed by `--imports`: a fresh interpreter importing what a
trial worker imports.

Defaults: the source stage of msl/configs/synth.yaml and the UDA stage of the quickstart
(benchmarks/synth_runs.py's UDA_STAGE).

Usage: python benchmarks/trial_profile.py [--synth DIR] [--source-iterations N] [--uda-iterations N]
                                          [--evaluations N] [--source-weights CKPT] [--imports]
                                          [--report FILE.md]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from synth_runs import CONFIG, UDA_STAGE, Report, header, source_overrides, synthetic_set

from msl.config import load_config

# (label, function name as cProfile records it: (file suffix, function)); cumulative seconds of each. The
# training parts are nested in `train_step`; the evaluation parts in `_evaluate_and_save`.
PARTS = [
    ("build data (datasets, file lists)", ("msl/trainer.py", "build_run_data")),
    ("training iterations (train_step)", ("msl/trainer.py", "train_step")),
    ("  backward", ("torch/_tensor.py", "backward")),
    ("  optimiser step", ("torch/optim/optimizer.py", "wrapper")),
    ("next batches (loading, augmenting)", ("msl/trainer.py", "_next_batches")),
    ("evaluations, all parts (_evaluate_and_save)", ("msl/trainer.py", "_evaluate_and_save")),
    ("  source val + target val (evaluate)", ("msl/evaluate.py", "evaluate")),
    ("  label-free validators", ("msl/evaluate.py", "label_free_validators")),
    ("  validators' compute (SND, BNM)", ("msl/evaluate.py", "compute")),
    ("  softmax maps saved", ("msl/probs_maps.py", "save_probs")),
    ("  TensorBoard images", ("msl/trainer.py", "_log_images")),
    ("  checkpoints (save_atomic)", ("msl/checkpoint.py", "save_atomic")),
    ("  metrics.jsonl", ("msl/run_dir.py", "write_metrics")),
    ("TensorBoard writer start", ("torch/utils/tensorboard/writer.py", "__init__")),
]


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative seconds of every function `name` in a file ending with `suffix`, outermost calls only."""
    total = 0.0
    for (file, _, function), (_, _, _, _, callers) in stats.stats.items():
        if function != name or not file.endswith(suffix):
            continue
        # Recursive or nested calls of the same function would count twice: keep the calls from elsewhere.
        total += sum(
            entry[3] for caller, entry in callers.items() if not (caller[2] == name and caller[0] == file)
        )
    return total


def timed(cfg, run_dir: Path) -> float:
    """Seconds `msl.trainer.train` takes for `cfg`, without a profiler."""
    from msl.trainer import train

    started = time.perf_counter()
    train(cfg, run_dir)
    return time.perf_counter() - started


def profiled(cfg, run_dir: Path) -> tuple[float, pstats.Stats]:
    profile = cProfile.Profile()
    profile.enable()
    wall = timed(cfg, run_dir)
    profile.disable()
    return wall, pstats.Stats(profile)


def table(say, title: str, wall: float, stats: pstats.Stats) -> None:
    """The parts of a profiled run (cProfile's overhead inflates Python-heavy parts: compare shares)."""
    say(f"{title}; the same run under cProfile took {wall:.1f} s, split:")
    say()
    say("| part | seconds | share |")
    say("|---|---:|---:|")
    seconds = {label: cumulative(stats, suffix, name) for label, (suffix, name) in PARTS}
    # The forward passes and losses are what train_step spends outside backward and the optimiser's step.
    step, backward, optimiser = (seconds[label] for label, _ in PARTS[1:4])
    for label, value in seconds.items():
        say(f"| {label} | {value:.2f} | {100 * value / wall:.0f}% |")
        if label == PARTS[3][0]:
            rest = step - backward - optimiser
            say(f"|   forward passes and losses | {rest:.2f} | {100 * rest / wall:.0f}% |")
    say()


def import_seconds() -> float:
    """A fresh interpreter importing what a trial's worker imports (the trainer, torch, Ray Tune)."""
    code = (
        "import time; t = time.perf_counter(); import msl.trainer, ray.tune; print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", type=Path, default=None, help="a generated set (default: generate one)")
    parser.add_argument("--source-iterations", type=int, default=load_config(CONFIG).optim.iterations)
    parser.add_argument("--uda-iterations", type=int, default=UDA_STAGE["optim.iterations"])
    parser.add_argument(
        "--evaluations",
        type=int,
        default=UDA_STAGE["optim.iterations"] // UDA_STAGE["eval.every"],
        help="evaluations of the UDA trial",
    )
    parser.add_argument("--source-weights", type=Path, default=None, help="skip the source stage")
    parser.add_argument("--imports", action="store_true", help="also time a trial worker's imports")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    report = Report()
    header("Where a trial's time goes", report.say)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.synth or synthetic_set(work, 0.5)
        common = {**source_overrides(data, 0), "runtime.threads": 1}
        weights = args.source_weights
        if weights is None:
            cfg = load_config(
                CONFIG,
                {**common, "optim.iterations": args.source_iterations, "eval.every": args.source_iterations},
            )
            plain = timed(cfg, work / "source")
            wall, stats = profiled(cfg, work / "source_profiled")
            title = f"### Source model, {args.source_iterations} iterations, 1 evaluation: {plain:.1f} s"
            table(report.say, title, wall, stats)
            weights = work / "source" / "checkpoints" / "last.pt"
        every = -(-args.uda_iterations // args.evaluations)
        uda = load_config(
            CONFIG,
            {
                **UDA_STAGE,
                **common,
                "loss.target": "iw_maxsquare",
                "model.weights": str(weights),
                "optim.iterations": args.uda_iterations,
                "eval.every": every,
            },
        )
        # The same trial twice in this process: the second is what each later trial of a study's reused
        # worker pays (the decoded files are cached by then, with data.cache_mb).
        first, again = timed(uda, work / "uda_first"), timed(uda, work / "uda_again")
        wall, stats = profiled(uda, work / "uda_profiled")
        title = (
            f"### UDA trial (iw_maxsquare), {args.uda_iterations} iterations, evaluation every {every}: "
            f"{first:.1f} s first in its process, {again:.1f} s the next"
        )
        table(report.say, title, wall, stats)
    if args.imports:
        report.say(
            f"A trial worker's imports (msl.trainer, ray.tune), fresh interpreter: {import_seconds():.1f} s"
        )
    report.write(args.report)


if __name__ == "__main__":
    main()
