"""Calibrate the embedded synthetic benchmark: source-only versus target-trained oracle mIoU, small model.

For each generator shift and seed, two models train with the base config `msl/configs/synth.yaml` (stage
source, `deeplab_resnet18_small`, 1 CPU thread each, two runs in parallel as a study runs its trials):

* source-only: trained on the source domain, scored on the target val split (its `oracle_miou`);
* oracle: trained on the target train split *with* its labels (a stage-source run whose source is the target's
  Cityscapes-format tree), scored on the same target val split.

The gap between the two is the room domain adaptation has; chance is 1 / (classes present in the target val
labels). Then one UDA sanity check: from the seed-0 source-only checkpoint at the default shift, the UDA stage
(`UDA_STAGE` overrides) with `none`, `maxsquare` and `iw_maxsquare`. It says whether adaptation helps at the
quickstart budget; the losses are not tuned against these target labels. Every score uses the whole val split.

Usage: python benchmarks/synth_calibration.py [--work DIR] [--shifts 0.25 0.5 0.75] [--seeds 0 1] [--set KEY=VALUE]
                                              [--report results/benchmarks/synth_calibration.md]
Runs already finished under --work (and generated sets with the same settings) are reused.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import msl
from msl.config import load_config, parse_override
from msl.data.synth import SYNTH_VERSION, generate
from msl.metrics import metric_class_names

CONFIG = Path(msl.__file__).parent / "configs" / "synth.yaml"
# The UDA stage of the quickstart, on top of synth.yaml (which is the source stage); see the header of synth.yaml.
UDA_STAGE = {"stage": "uda", "optim.optimizer": "sgd", "optim.lr": 0.01, "optim.iterations": 60,
             "eval.every": 30, "loss.lambda_target": 1.0}
# Variants of the UDA check: name -> overrides. With `model.multi_level` (synth.yaml) even `none` forwards the
# target batches (for the guidance term), which updates the batch-norm statistics; `source_batches_only` does not.
UDA_VARIANTS = {
    "source_batches_only": {"loss.target": "none", "model.multi_level": False},
    "none": {"loss.target": "none"},
    "maxsquare": {"loss.target": "maxsquare"},
    "iw_maxsquare": {"loss.target": "iw_maxsquare"},
}
THIN_CLASSES = ("pole", "traffic sign", "person")  # the small, thin classes whose oracle IoU the table shows
DEFAULT_SHIFT = 0.5  # msl.data.synth.generate's default; the UDA check runs there


@dataclass
class Job:
    """One training run: overrides on top of synth.yaml, and where it runs."""

    name: str
    run_dir: Path
    overrides: dict = field(default_factory=dict)


def run_job(job: Job) -> dict:
    """Train (or reuse a finished run in `job.run_dir`) and return its last evaluation record and wall time."""
    metrics = job.run_dir / "metrics.jsonl"
    cfg = load_config(CONFIG, job.overrides)
    if metrics.is_file():
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        if records and records[-1]["iteration"] == cfg.optim.iterations:
            return records[-1] | {"wall_s": None}
    from msl.trainer import train

    started = time.perf_counter()
    record = train(cfg, job.run_dir)
    return record | {"wall_s": time.perf_counter() - started}


def run_jobs(jobs: list[Job], parallel: int) -> dict[str, dict]:
    """Records of all jobs by name, `parallel` at a time in fresh processes (each sets its own thread count)."""
    with ProcessPoolExecutor(max_workers=parallel, mp_context=get_context("spawn")) as pool:
        return dict(zip([job.name for job in jobs], pool.map(run_job, jobs), strict=True))


def synthetic_set(work: Path, shift: float) -> tuple[Path, float | None]:
    """The default-scale set of `shift` under `work`, generated unless already there; (path, seconds or None)."""
    out = work / f"synth_shift{shift:g}"
    info = out / "synth.json"
    if info.is_file():
        settings = json.loads(info.read_text())
        if (settings["shift"], settings["scale"], settings["version"]) == (shift, "default", SYNTH_VERSION):
            return out, None
    return out, generate(out, shift=shift, progress=False)["seconds"]


def present_classes(target: Path) -> int:
    """How many classes occur in the target val labels (for the chance level 1 / that number)."""
    import torch

    from msl.data import build_dataset

    dataset = build_dataset("cityscapes", target, "val", num_classes=19)
    present = torch.zeros(256, dtype=torch.bool)
    for _, label, _ in dataset:
        present[label.unique()] = True
    return int(present[:19].sum())


def calibration_jobs(work: Path, data: Path, shift: float, seed: int, overrides: dict) -> tuple[Job, Job]:
    """The source-only and the oracle run of one (shift, seed) with `overrides` of synth.yaml; each evaluates
    once, at its end."""
    iterations = load_config(CONFIG, overrides).optim.iterations
    common = {**overrides, "data.target_root": str(data / "target"), "runtime.seed": seed,
              "runtime.progress": False, "optim.iterations": iterations, "eval.every": iterations,
              "eval.max_images": None}
    source_only = Job(f"source {shift:g} {seed}", work / "runs" / f"shift{shift:g}_seed{seed}_source",
                      {**common, "data.source_root": str(data / "source")})
    oracle = Job(f"oracle {shift:g} {seed}", work / "runs" / f"shift{shift:g}_seed{seed}_oracle",
                 {**common, "data.source": "cityscapes", "data.source_root": str(data / "target"),
                  "data.source_train_split": "train", "data.source_val_split": "val"})
    return source_only, oracle


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.is_file() else []
    return f"{models[0] if models else platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores"


def percent(value: float) -> str:
    return f"{100 * value:5.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/synth_calibration"),
                        help="where generated sets and run directories go (reused when rerun)")
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.25, DEFAULT_SHIFT, 0.75])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--uda-seeds", type=int, nargs="*", default=[0, 1], help="none: skip the UDA check")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (1 thread each)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override synth.yaml for the source-only and oracle runs, e.g. optim.iterations=300")
    parser.add_argument("--report", type=Path, default=None, help="also write the output to this markdown file")
    args = parser.parse_args()

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    overrides = dict(map(parse_override, args.overrides))
    base = load_config(CONFIG, overrides)
    say("# Synthetic benchmark calibration")
    say()
    say(f"- machine: {machine()}, shared with other users (load average at start: "
        f"{os.getloadavg()[0]:.1f}); times are longer than on an idle machine")
    say(f"- date: {datetime.date.today().isoformat()}")
    say(f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
    say(f"- config: msl/configs/synth.yaml ({base.model.arch}, batch {base.data.batch_size}, {base.optim.optimizer} lr {base.optim.lr}, "
        f"{base.optim.iterations} iterations, {base.runtime.threads} thread per run, {args.parallel} runs at a time)")
    say()

    say("## Generation (default scale, seed 0)")
    say()
    say("| shift | seconds |")
    say("|---|---|")
    sets: dict[float, Path] = {}
    for shift in args.shifts:
        sets[shift], seconds = synthetic_set(args.work, shift)
        say(f"| {shift:g} | {'reused' if seconds is None else f'{seconds:.1f}'} |")
    say()

    jobs = [job for shift in args.shifts for seed in args.seeds
            for job in calibration_jobs(args.work, sets[shift], shift, seed, overrides)]
    records = run_jobs(jobs, args.parallel)
    say("## Source-only versus oracle, target val mIoU (%)")
    say()
    thin = [metric_class_names(19).index(name) for name in THIN_CLASSES]
    say("| shift | seed | source-only | oracle | gap | chance | oracle IoU " + " / ".join(THIN_CLASSES)
        + " | source-only run s | oracle run s |")
    say("|---|---|---|---|---|---|---|---|---|")
    for shift in args.shifts:
        chance = 1 / present_classes(sets[shift] / "target")
        for seed in args.seeds:
            source_only, oracle = (records[f"{kind} {shift:g} {seed}"] for kind in ("source", "oracle"))
            times = [f"{r['elapsed_s']:.0f}" for r in (source_only, oracle)]
            say(f"| {shift:g} | {seed} | {percent(source_only['oracle_miou'])} | {percent(oracle['oracle_miou'])} "
                f"| {percent(oracle['oracle_miou'] - source_only['oracle_miou'])} | {percent(chance)} "
                f"| {' / '.join(percent(oracle['oracle_iou'][k]).strip() for k in thin)} | {times[0]} | {times[1]} |")
    say()

    if args.uda_seeds:
        say_uda_check(args, sets, records, say)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text("\n".join(lines) + "\n")


def say_uda_check(args: argparse.Namespace, sets: dict[float, Path], records: dict[str, dict], say) -> None:
    """UDA from the seed-0 source-only checkpoint at the default shift, each variant and seed; prints a table."""
    if DEFAULT_SHIFT not in sets or 0 not in args.seeds:
        raise SystemExit(f"the UDA check needs shift {DEFAULT_SHIFT} and seed 0 among --shifts and --seeds")
    source_job, _ = calibration_jobs(args.work, sets[DEFAULT_SHIFT], DEFAULT_SHIFT, 0,
                                     dict(map(parse_override, args.overrides)))
    checkpoint = source_job.run_dir / "checkpoints" / "last.pt"
    jobs = [Job(f"{variant} {seed}", args.work / "runs" / f"uda_shift{DEFAULT_SHIFT:g}_{variant}_seed{seed}",
                {**source_job.overrides, **UDA_STAGE, "eval.every": UDA_STAGE["optim.iterations"],
                 "model.weights": str(checkpoint), "runtime.seed": seed, **overrides})
            for variant, overrides in UDA_VARIANTS.items() for seed in args.uda_seeds]
    uda = run_jobs(jobs, args.parallel)
    start = records[f"source {DEFAULT_SHIFT:g} 0"]
    settings = ", ".join(f"{key}={value}" for key, value in UDA_STAGE.items())
    say(f"## UDA check at shift {DEFAULT_SHIFT:g}, target val mIoU (%)")
    say()
    say(f"From the seed-0 source-only checkpoint (target mIoU {percent(start['oracle_miou']).strip()}, label-free "
        f"target_max_square {start['target_max_square']:.3f}); {settings}. "
        "Same seed = same batches, so a difference to `none` is the loss's. `target_max_square` is the "
        "label-free validator (mean sum of p^2 on target-train images); `run s` includes one full evaluation.")
    say()
    say("| variant | " + " | ".join(f"seed {seed}" for seed in args.uda_seeds)
        + " | mean | vs none | target_max_square | run s |")
    say("|---|" + "---|" * (len(args.uda_seeds) + 4))
    baseline = statistics.mean(uda[f"none {seed}"]["oracle_miou"] for seed in args.uda_seeds)
    for variant in UDA_VARIANTS:
        runs = [uda[f"{variant} {seed}"] for seed in args.uda_seeds]
        mean = statistics.mean(run["oracle_miou"] for run in runs)
        confidence = statistics.mean(run["target_max_square"] for run in runs)
        seconds = statistics.mean(run["elapsed_s"] for run in runs)
        say(f"| {variant} | " + " | ".join(percent(run["oracle_miou"]) for run in runs)
            + f" | {percent(mean)} | {100 * (mean - baseline):+.1f} | {confidence:.3f} | {seconds:.0f} |")
    say()


if __name__ == "__main__":
    main()
