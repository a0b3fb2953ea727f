"""Why the benchmark's network lets adaptation act: small_segnet against its ablations and the old small
DeepLab.

Each row changes one thing of the design (msl/configs/synth.yaml: small_segnet, AdamW source stage) and runs,
for each seed at the default shift: the source stage, then the quickstart's UDA stage (`synth_runs.UDA_STAGE`)
from it as `source_only` (no target data), as `adabn` (target batches forwarded without a loss: batch-norm
statistics adapt; the same as source_only for a group-norm network) and as `iw_maxsquare` at lambda_target 1.
Seeds are paired: the same seed gives the same source batches and target batches in every row. The table shows
the source model's target mIoU, the UDA results, and the paired differences of iw_maxsquare against
source_only (all that target data does) and against adabn (what the loss does beyond batch-norm statistics),
the effect the benchmark exists to measure. No row is tuned on the target labels; lambda_target stays 1
everywhere.

Rows:
* small_segnet: the design;
* batch norm: `small_segnet_bn` (normalisation; its `adabn` control is the same as source_only here, see the
  trainer: a loss-free target forward would move its statistics);
* coarse grid: `small_segnet_coarse`, no decoder, the main head on the 1/8 grid (8x16 at 64x128);
* old source recipe: small_segnet with the previous quickstart's source stage (AdamW, 300 iterations, batch
  4);
* deeplab_resnet18_small: the previous benchmark network (8x16 logit grid through dilated ASPP, batch norm)
  with the new source recipe.

Usage: python benchmarks/small_model_ablation.py [--work DIR] [--seeds 0 1 2] [--parallel 2]
       [--report results/benchmarks/small_model_ablation.md]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from scipy import stats
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
from study.space import SHARED_WITH_SOURCE

ROWS = {  # name -> overrides of the source stage; the UDA stage takes their model.* and runtime.* keys
    "small_segnet": {},
    "batch norm": {"model.arch": "small_segnet_bn"},
    "coarse grid": {"model.arch": "small_segnet_coarse"},
    "old source recipe": {"optim.iterations": 300, "data.batch_size": 4, "optim.head_lr_mult": 2.0},
    "deeplab_resnet18_small": {"model.arch": "deeplab_resnet18_small", "runtime.channels_last": True},
}
UDA = {
    "source_only": {"loss.target": "none"},
    "adabn": {"loss.target": "none", "loss.adabn": True},
    "iw_maxsquare": {"loss.target": "iw_maxsquare", "loss.lambda_target": 1.0},
}


def _shared(overrides: dict) -> dict:
    """What a UDA stage shares with its source stage, as a study does (study.space.SHARED_WITH_SOURCE)."""
    return {key: value for key, value in overrides.items() if key.startswith(SHARED_WITH_SOURCE)}


def gain(values: list[float], baseline: list[float]) -> str:
    """Mean paired difference in points, per seed in brackets, and the paired t-test's p-value."""
    differences = [a - b for a, b in zip(values, baseline, strict=True)]
    p_value = (
        stats.ttest_rel(values, baseline).pvalue
        if len(differences) > 1 and len(set(differences)) > 1
        else None
    )
    return (
        f"{100 * statistics.mean(differences):+.1f} ({', '.join(f'{100 * d:+.1f}' for d in differences)}), "
        f"p {'–' if p_value is None else f'{p_value:.3f}'}"
    )


def slug(name: str) -> str:
    return name.replace(" ", "_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("runs/synth_calibration"),
        help="where the generated set and run directories go (shared with synth_calibration.py)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (1 thread each)")
    parser.add_argument(
        "--report", type=Path, default=None, help="also write the output to this markdown file"
    )
    args = parser.parse_args()
    report = Report()
    say = report.say

    data = synthetic_set(args.work, DEFAULT_SHIFT)
    runs = args.work / "runs"

    def source_dir(row: str, seed: int) -> Path:  # the design row's runs are the calibration's source runs
        name = (
            f"shift{DEFAULT_SHIFT:g}_seed{seed}_source"
            if row == "small_segnet"
            else f"ablation_{slug(row)}_seed{seed}"
        )
        return runs / name

    sources = [
        Job(f"{row} {seed}", source_dir(row, seed), {**source_overrides(data, seed), **overrides})
        for row, overrides in ROWS.items()
        for seed in args.seeds
    ]
    source_records = run_jobs(sources, args.parallel)
    uda_jobs = [
        Job(
            f"{row} {seed} {variant}",
            runs / f"ablation_{slug(row)}_seed{seed}_{variant}",
            {
                **source_overrides(data, seed),
                **_shared(ROWS[row]),
                **UDA_STAGE,
                **UDA[variant],
                "model.weights": str(RunDir(source_dir(row, seed)).last),
            },
        )
        for row in ROWS
        for seed in args.seeds
        for variant in UDA
    ]
    uda = run_jobs(uda_jobs, args.parallel)

    header("Which differences of the benchmark network matter", say)
    say(
        f"Target val mIoU (%) at shift {DEFAULT_SHIFT:g}, whole val split, seeds {args.seeds}, mean over "
        "seeds. "
        "*gain vs X*: iw_maxsquare (lambda_target 1) minus X after the same UDA stage from the same source "
        "model, "
        "mean (per seed) and the p-value of a paired t-test over seeds."
    )
    say()
    say(
        "| row | source model | source_only | adabn | iw_maxsquare | gain vs source_only (per seed), p "
        "| gain vs adabn (per seed), p |"
    )
    say("|---|---:|---:|---:|---:|---|---|")
    for row in ROWS:
        start = [source_records[f"{row} {seed}"][-1]["oracle_miou"] for seed in args.seeds]
        final = {
            variant: [uda[f"{row} {seed} {variant}"][-1]["oracle_miou"] for seed in args.seeds]
            for variant in UDA
        }
        means = " | ".join(percent(statistics.mean(final[variant])) for variant in UDA)
        say(
            f"| {row} | {percent(statistics.mean(start))} | {means} | "
            f"{gain(final['iw_maxsquare'], final['source_only'])} "
            f"| {gain(final['iw_maxsquare'], final['adabn'])} |"
        )
    say()
    report.write(args.report)


if __name__ == "__main__":
    main()
