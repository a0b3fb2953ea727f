"""How many UDA iterations the embedded benchmark's adaptation needs: its gain over source-only, stage-long.

For each seed (default 4-6: seeds the quickstart never uses), the source model of msl/configs/synth.yaml, then
the quickstart's UDA stage (SGD lr 0.01, batch 8 + 8) for each stage length of `--iterations`, evaluated every
`--every`, for source_only and each adaptation loss at the lambda_target fixed in advance in the middle of its
quickstart grid (placed by benchmarks/loss_scale.py, never chosen by target labels). Printed per length:
target val mIoU (%) of each variant at each evaluation, mean over seeds, and each loss's paired gain over
source_only with the share of its gain at the last iteration that it has reached at each evaluation.

Usage: python benchmarks/uda_length.py [--seeds 4 5 6] [--iterations 60 30] [--every 10] [--work DIR]
                                       [--report results/benchmarks/uda_length.md]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from synth_runs import (
    DEFAULT_SHIFT,
    UDA_STAGE,
    Job,
    Report,
    header,
    percent,
    run_jobs,
    source_overrides,
    synthetic_set,
)

from msl.run_dir import RunDir

# The middle of each loss's lambda_target grid in search_spaces/quickstart.yaml (equal initial gradients).
LOSSES = {"entropy": 0.6, "maxsquare": 2.5, "iw_maxsquare": 1.0, "iw_maxsquare_multi": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[4, 5, 6])
    parser.add_argument(
        "--iterations", type=int, nargs="+", default=[60, 30], help="stage lengths to compare"
    )
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("runs/uda_length"))
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (1 thread each)")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    data = synthetic_set(args.work, DEFAULT_SHIFT)
    sources = {seed: args.work / "runs" / f"seed{seed}_source" for seed in args.seeds}
    run_jobs(
        [Job(f"source {s}", path, source_overrides(data, s)) for s, path in sources.items()], args.parallel
    )
    variants = {"source_only": {"loss.target": "none"}} | {
        loss: {
            "loss.target": loss.removesuffix("_multi"),
            "loss.lambda_target": value,
            "model.multi_level": loss.endswith("_multi"),
        }
        for loss, value in LOSSES.items()
    }
    jobs = [
        Job(
            f"{name} {seed} {length}",
            args.work / "runs" / f"seed{seed}_{name}_{length}",
            {
                **source_overrides(data, seed),
                **UDA_STAGE,
                "optim.iterations": length,
                "eval.every": args.every,
                **overrides,
                "model.weights": str(RunDir(path).last),
            },
        )
        for length in args.iterations
        for seed, path in sources.items()
        for name, overrides in variants.items()
    ]
    records = run_jobs(jobs, args.parallel)
    report = Report()
    header("UDA stage length on the embedded benchmark", report.say)
    report.say(
        f"Target val mIoU (%), mean over seeds {', '.join(map(str, args.seeds))}; lambda_target fixed: "
        + ", ".join(f"{loss} {value:g}" for loss, value in LOSSES.items())
        + "."
    )
    for length in args.iterations:
        miou = {  # (variant, seed) -> {iteration: target val mIoU}
            (name, seed): {r["iteration"]: r["oracle_miou"] for r in records[f"{name} {seed} {length}"]}
            for name in variants
            for seed in args.seeds
        }
        say_stage(report.say, length, args.every, list(variants), args.seeds, miou)
    report.write(args.report)


def say_stage(say, length: int, every: int, variants: list[str], seeds: list[int], miou: dict) -> None:
    """The tables of one stage length: mIoU per variant, and each loss's paired gain over source_only."""
    say()
    say(f"## A stage of {length} iterations (its poly schedule ends there), evaluated every {every}")
    say()
    points = sorted(miou["source_only", seeds[0]])
    say("| iteration | " + " | ".join(variants) + " |")
    say("|---:|" + "---:|" * len(variants))
    for point in points:
        cells = [percent(statistics.mean(miou[name, s][point] for s in seeds)) for name in variants]
        say(f"| {point} | " + " | ".join(cells) + " |")
    say()
    say("Paired gain over source_only (points, mean ± sd over seeds) and its share of the gain at the end:")
    say()
    say("| iteration | " + " | ".join(LOSSES) + " |")
    say("|---:|" + "---:|" * len(LOSSES))
    last = points[-1]
    for point in points:
        cells = []
        for loss in LOSSES:
            gains = [miou[loss, s][point] - miou["source_only", s][point] for s in seeds]
            final = statistics.mean(miou[loss, s][last] - miou["source_only", s][last] for s in seeds)
            share = statistics.mean(gains) / final if final else float("nan")
            spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
            cells.append(f"{100 * statistics.mean(gains):+.1f} ± {100 * spread:.1f} ({100 * share:.0f}%)")
        say(f"| {point} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
