"""Calibrate the embedded synthetic benchmark: room to adapt, a converged source stage, controls and noise.

With the base config `msl/configs/synth.yaml` (1 CPU thread per run, runs in parallel as a study runs trials):

1. Source-only versus oracle, per generator shift and seed: the source stage trained on the source domain, and
   the same stage trained on the target train split *with* its labels (the oracle), both scored on the whole
   target val split. The gap is the room domain adaptation has; chance is 1 / (classes present in target val).
2. Convergence at the default shift: the source stage's source-val mIoU every `--curve-every` iterations; the
   change over its last 20% should stay under 1 point.
3. Controls at the UDA budget (the quickstart's UDA stage, `synth_runs.UDA_STAGE`), from each seed's source
   model:
   `source_only` (the UDA stage without any target data: it should stay within 1 point of its source model),
   `target_supervised` (the same stage trained on target labels: how far the stage can move the model), and
   `iw_maxsquare` at lambda_target 1. Then the paired standard deviation over seeds of (iw_maxsquare -
   source_only) and the smallest mean difference a paired t-test over that many seeds detects at p < 0.05.
   No loss or setting is tuned here against these target labels: they only measure the instrument.

With `--arch NAME` every run trains another network of msl.models (e.g. `small_segnet_half`), its runs under
`--work/NAME`: how a candidate network would calibrate.

Usage: python benchmarks/synth_calibration.py [--work DIR] [--shifts 0.25 0.5 0.75] [--seeds 0 1]
       [--uda-seeds 0 1 2] [--parallel 2] [--arch NAME] [--report results/benchmarks/synth_calibration.md]
Runs already finished under --work (and generated sets with the same settings) are reused.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from scipy import stats
from synth_runs import (
    CONFIG,
    DEFAULT_SHIFT,
    UDA_STAGE,
    Job,
    Report,
    header,
    oracle_overrides,
    percent,
    run_jobs,
    source_overrides,
    synthetic_set,
)

from msl.config import load_config
from msl.metrics import metric_class_names
from msl.models.build import SMALL_ARCHS
from msl.run_dir import RunDir

THIN_CLASSES = ("pole", "traffic sign", "person")  # the small, thin classes whose IoU the table shows


def present_classes(target: Path) -> int:
    """How many classes occur in the target val labels (for the chance level 1 / that number)."""
    from msl.data import build_dataset

    dataset = build_dataset("cityscapes", target, "val", num_classes=19)
    present = torch.zeros(256, dtype=torch.bool)
    for _, label, _ in dataset:
        present[label.unique()] = True
    return int(present[:19].sum())


def source_jobs(work: Path, data: Path, shift: float, seed: int, every: int) -> tuple[Job, Job]:
    """The source-only and the oracle source stage of one (shift, seed), evaluating every `every`
    iterations."""
    common = {"eval.every": every}
    return (
        Job(
            f"source {shift:g} {seed}",
            work / "runs" / f"shift{shift:g}_seed{seed}_source",
            {**source_overrides(data, seed), **common},
        ),
        Job(
            f"oracle {shift:g} {seed}",
            work / "runs" / f"shift{shift:g}_seed{seed}_oracle",
            {**oracle_overrides(data, seed), **common},
        ),
    )


def uda_jobs(work: Path, data: Path, seed: int) -> list[Job]:
    """The UDA-budget controls from the seed's source model at the default shift."""
    weights = str(RunDir(work / "runs" / f"shift{DEFAULT_SHIFT:g}_seed{seed}_source").last)
    stage = {**source_overrides(data, seed), **UDA_STAGE, "model.weights": weights}
    runs = {
        "source_only": {"loss.target": "none"},
        "iw_maxsquare": {"loss.target": "iw_maxsquare", "loss.lambda_target": 1.0},
        # Supervised on the target train labels for the UDA stage's budget: a stage-source run from the model.
        "target_supervised": {**oracle_overrides(data, seed), "stage": "source"},
    }
    return [
        Job(
            f"{name} {seed}",
            work / "runs" / f"uda_shift{DEFAULT_SHIFT:g}_seed{seed}_{name}",
            {**stage, **overrides},
        )
        for name, overrides in runs.items()
    ]


def on_arch(jobs: list[Job], arch: str | None) -> list[Job]:
    """The jobs, training `arch` when one is given."""
    if arch is None:
        return jobs
    return [Job(job.name, job.run_dir, {**job.overrides, "model.arch": arch}) for job in jobs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("runs/synth_calibration"),
        help="where generated sets and run directories go (reused when rerun)",
    )
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.25, DEFAULT_SHIFT, 0.75])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--uda-seeds", type=int, nargs="*", default=[0, 1, 2], help="none: skip the UDA controls"
    )
    parser.add_argument(
        "--curve-every", type=int, default=80, help="evaluation interval of the convergence curve"
    )
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (1 thread each)")
    parser.add_argument("--arch", choices=SMALL_ARCHS, default=None, help="default: synth.yaml's network")
    parser.add_argument(
        "--report", type=Path, default=None, help="also write the output to this markdown file"
    )
    args = parser.parse_args()
    args.runs = args.work / args.arch if args.arch else args.work  # where the run directories go
    report = Report()
    say = report.say

    iterations = load_config(CONFIG).optim.iterations
    sets = {shift: synthetic_set(args.work, shift) for shift in args.shifts}
    jobs = []
    for shift in args.shifts:
        seeds = sorted(set(args.seeds) | (set(args.uda_seeds) if shift == DEFAULT_SHIFT else set()))
        every = args.curve_every if shift == DEFAULT_SHIFT else iterations
        jobs += [job for seed in seeds for job in source_jobs(args.runs, sets[shift], shift, seed, every)]
    records = run_jobs(on_arch(jobs, args.arch), args.parallel)
    header("Synthetic benchmark calibration", say)
    if args.arch:
        say(f"Every run below trains `{args.arch}` (`--arch`), not synth.yaml's network.")
        say()

    say("## Source-only versus oracle, target val mIoU (%), whole val split")
    say()
    thin = [metric_class_names(19).index(name) for name in THIN_CLASSES]
    thin_names = " / ".join(THIN_CLASSES)
    say(
        f"| shift | seed | source-only | oracle | gap | chance | source-only IoU {thin_names} "
        f"| oracle IoU {thin_names} |"
    )
    say("|---|---|---:|---:|---:|---:|---|---|")
    for shift in args.shifts:
        chance = 1 / present_classes(sets[shift] / "target")
        for seed in args.seeds:
            source, oracle = (records[f"{kind} {shift:g} {seed}"][-1] for kind in ("source", "oracle"))
            say(
                f"| {shift:g} | {seed} | {percent(source['oracle_miou'])} | {percent(oracle['oracle_miou'])} "
                f"| {percent(oracle['oracle_miou'] - source['oracle_miou'])} | {percent(chance)} "
                f"| {' / '.join(percent(source['oracle_iou'][k]) for k in thin)} "
                f"| {' / '.join(percent(oracle['oracle_iou'][k]) for k in thin)} |"
            )
    say()

    if DEFAULT_SHIFT in args.shifts:
        say_convergence(args, records, iterations, say)
    if args.uda_seeds and DEFAULT_SHIFT in args.shifts:
        say_controls(args, sets[DEFAULT_SHIFT], records, say)
    report.write(args.report)


def say_convergence(args: argparse.Namespace, records: dict, iterations: int, say) -> None:
    seeds = sorted(set(args.seeds) | set(args.uda_seeds))
    say(f"## Convergence of the source stage at shift {DEFAULT_SHIFT:g}: source-val mIoU (%) by iteration")
    say()
    say("Source-only runs (selection metric of the source stage); the oracle's own val mIoU in brackets.")
    say()
    say("| iteration | " + " | ".join(f"seed {seed}" for seed in seeds) + " |")
    say("|---:|" + "---:|" * len(seeds))
    curves = {seed: records[f"source {DEFAULT_SHIFT:g} {seed}"] for seed in seeds}
    oracles = {seed: records.get(f"oracle {DEFAULT_SHIFT:g} {seed}") for seed in seeds}
    for index, record in enumerate(curves[seeds[0]]):
        cells = []
        for seed in seeds:
            value = percent(curves[seed][index]["source_val_miou"])
            if oracles[seed]:
                value += f" ({percent(oracles[seed][index]['source_val_miou'])})"
            cells.append(value)
        say(f"| {record['iteration']} | " + " | ".join(cells) + " |")
    # The last evaluation at or before 80% of the stage: the change from there covers at least its last 20%.
    start = max(r["iteration"] for r in curves[seeds[0]] if r["iteration"] <= 0.8 * iterations)
    changes = []
    for seed in seeds:
        at = {r["iteration"]: r["source_val_miou"] for r in curves[seed]}
        changes.append(f"seed {seed}: {100 * (at[iterations] - at[start]):+.1f}")
    say()
    say(
        f"Change of the source-val mIoU from iteration {start} to {iterations} (the last "
        f"{100 * (iterations - start) / iterations:.0f}% of the stage): {', '.join(changes)} points."
    )
    say()


def say_controls(args: argparse.Namespace, data: Path, records: dict, say) -> None:
    jobs = [job for seed in args.uda_seeds for job in uda_jobs(args.runs, data, seed)]
    uda = run_jobs(on_arch(jobs, args.arch), args.parallel)
    say(
        f"## Controls and noise at the UDA budget, shift {DEFAULT_SHIFT:g}: target val mIoU (%) at the last "
        "iteration"
    )
    say()
    say(
        "Each row starts from that seed's source model (column *source model*). *source_only*: the UDA stage "
        "with "
        "no target data at all; *target_supervised*: the same stage trained on the target train labels; "
        "*iw_maxsquare*: lambda_target 1."
    )
    say()
    names = ("source_only", "target_supervised", "iw_maxsquare")
    say("| seed | source model | " + " | ".join(names) + " | iw_maxsquare - source_only |")
    say("|---|---:|" + "---:|" * (len(names) + 1))
    differences = []
    for seed in args.uda_seeds:
        start = records[f"source {DEFAULT_SHIFT:g} {seed}"][-1]["oracle_miou"]
        final = {name: uda[f"{name} {seed}"][-1]["oracle_miou"] for name in names}
        differences.append(final["iw_maxsquare"] - final["source_only"])
        say(
            f"| {seed} | {percent(start)} | "
            + " | ".join(percent(final[name]) for name in names)
            + f" | {100 * differences[-1]:+.1f} |"
        )
    say()
    if len(differences) > 1:
        spread = statistics.stdev(differences)
        detectable = stats.t.ppf(0.975, len(differences) - 1) * spread / len(differences) ** 0.5
        say(
            f"Paired difference iw_maxsquare - source_only over {len(differences)} seeds: mean "
            f"{100 * statistics.mean(differences):+.1f}, standard deviation {100 * spread:.1f} points; a "
            "paired "
            f"t-test over {len(differences)} seeds reaches p < 0.05 (two-sided) for a mean difference above "
            f"{100 * detectable:.1f} points at that spread."
        )
        say()


if __name__ == "__main__":
    main()
