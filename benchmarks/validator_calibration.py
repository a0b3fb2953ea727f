"""Which label-free validator picks checkpoints and configurations closest to the oracle, on the synthetic
benchmark.

The embedded benchmark has target labels, so every validator's choices can be scored. For each generator shift
and seed: the source model of `synth_calibration.py` (synth.yaml's source stage, reused when already trained
under --work), then UDA runs of every variant (study.space.VARIANTS) from it with the quickstart's UDA stage
(`synth_runs.UDA_STAGE`), evaluated every `--eval-every` iterations; each evaluation reports the
per-checkpoint validators and saves the validator images' softmax maps. Per shift, the runs form one
experiment whose configurations are the variants, and study.selection audits every validator (and the
study-level ones computed from the maps): regret at the checkpoint level (within runs) and at the
configuration level (which variant, every run at its last checkpoint). Prints a markdown table, validators
ordered by their mean regret over the two levels and the shifts, and saves a plot. No validator is tuned here;
the target labels only score.

Usage: python benchmarks/validator_calibration.py [--work DIR] [--shifts 0.25 0.5 0.75] [--seeds 0 1 2]
           [--variants source_only maxsquare ...] [--eval-every 10] [--uda-set KEY=VALUE]
           [--parallel 2] [--report FILE.md] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from synth_calibration import source_jobs
from synth_runs import CONFIG, UDA_STAGE, Job, Report, header, run_jobs, synthetic_set

from msl.config import load_config, parse_override
from msl.objectives import LABEL_FREE_MODES
from msl.run_dir import RunDir
from study import layout
from study.decide import TARGET
from study.results import ExperimentResults
from study.selection import checkpoint_audit, configuration_audit, with_study_validators
from study.space import VARIANTS

REFERENCES = {"oracle: target mIoU": (TARGET, "max"), "no selection: last": ("iteration", "max")}
LEVELS = {"checkpoint": checkpoint_audit, "configuration": configuration_audit}


def uda_jobs(args: argparse.Namespace, sets: dict[float, Path]) -> tuple[list[Job], list[Job]]:
    """The source jobs (one per shift and seed) and the UDA jobs (per shift, variant and seed)."""
    uda_overrides = dict(map(parse_override, args.uda_overrides))
    iterations = load_config(CONFIG).optim.iterations
    sources, runs = [], []
    for shift in args.shifts:
        for seed in args.seeds:
            source, _ = source_jobs(args.work, sets[shift], shift, seed, every=iterations)
            sources.append(source)
            for variant in args.variants:
                trial = layout.trials_dir(study_dir(args.work), f"shift{shift:g}") / f"{variant}_s{seed}"
                runs.append(
                    Job(
                        f"{variant} {shift:g} {seed}",
                        trial / layout.RUN_DIR,
                        {
                            **source.overrides,
                            **UDA_STAGE,
                            "eval.every": args.eval_every,
                            **VARIANTS[variant],
                            "model.weights": str(RunDir(source.run_dir).last),
                            "runtime.seed": seed,
                            **uda_overrides,
                        },
                    )
                )
    return sources, runs


def study_dir(work: Path) -> Path:
    """The study-layout directory holding the UDA runs, one experiment `shift<shift>` per shift."""
    return work / "audit"


def experiment(work: Path, shift: float, variants: list[str], seeds: list[int]) -> ExperimentResults:
    """One shift's UDA runs read as a study experiment, with the study-level validators added."""
    name = f"shift{shift:g}"
    trials, evals = [], []
    for variant in variants:
        for seed in seeds:
            trial = {
                "trial_name": f"{variant}_s{seed}",
                "variant": variant,
                "seed": seed,
                "config": "default",
                "status": "finished",
            }
            trials.append(trial)
            run = layout.trials_dir(study_dir(work), name) / trial["trial_name"] / layout.RUN_DIR
            evals.extend({**trial, **record} for record in RunDir(run).read_metrics())
    plan = layout.Plan(
        experiment=name, metric="source_val_miou", max_iterations=max(e["iteration"] for e in evals)
    )
    exp = ExperimentResults(name, plan, pd.DataFrame(trials), pd.DataFrame(evals), study_dir(work))
    exp.evals = with_study_validators(exp).astype({TARGET: float})
    return exp


def audit(exp: ExperimentResults) -> pd.DataFrame:
    """One row per validator and level: regret, worst regret, Spearman and weighted Spearman."""
    validators = {
        name: (name, mode)
        for name, mode in LABEL_FREE_MODES.items()
        if name in exp.evals and exp.evals[name].notna().any()
    }
    rows = []
    for name, (column, mode) in {**validators, **REFERENCES}.items():
        for level, function in LEVELS.items():
            if level == "configuration" and column == "iteration":
                continue  # every run ends at the same iteration
            result = function(exp.evals, column, mode)
            rows.append(
                {
                    "validator": name,
                    "level": level,
                    "regret": 100 * result["regret"],
                    "worst_regret": 100 * result["worst_regret"],
                    "spearman": result["spearman"],
                    "weighted_spearman": result["weighted_spearman"],
                }
            )
    return pd.DataFrame(rows)


def table(results: dict[float, pd.DataFrame]) -> pd.DataFrame:
    """Validators x (level, statistic), means over shifts, plus each shift's regret; ordered by mean
    regret."""
    frame = pd.concat([result.assign(shift=shift) for shift, result in results.items()], ignore_index=True)
    mean = frame.groupby(["validator", "level"])[["regret", "worst_regret", "weighted_spearman"]].mean()
    wide = mean.unstack("level")
    wide.columns = [f"{level} {statistic.replace('_', ' ')}" for statistic, level in wide.columns]
    per_shift = frame.pivot_table(index="validator", columns=["level", "shift"], values="regret")
    per_shift.columns = [f"{level} regret, shift {shift:g}" for level, shift in per_shift.columns]
    wide = wide.join(per_shift)
    order = wide[["checkpoint regret", "configuration regret"]].mean(axis=1).sort_values(kind="stable").index
    return wide.loc[order]


def markdown(frame: pd.DataFrame) -> str:
    columns = list(frame.columns)
    lines = ["| validator | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, row in frame.iterrows():
        cells = [
            "–"
            if pd.isna(value)
            else f"{value:.2f}"
            if "Spearman" in column or "spearman" in column
            else f"{value:.1f}"
            for column, value in row.items()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(frame)), 4), layout="constrained")
    positions = np.arange(len(frame))
    for offset, level in ((-0.2, "checkpoint"), (0.2, "configuration")):
        axis.bar(positions + offset, frame[f"{level} regret"], width=0.4, label=f"{level} level")
        shifts = [column for column in frame.columns if column.startswith(f"{level} regret, shift")]
        for column in shifts:
            axis.scatter(positions + offset, frame[column], color="black", s=8, zorder=3)
    axis.set_xticks(positions, frame.index, rotation=30, ha="right")
    axis.set_ylabel("regret: target mIoU points below the oracle")
    axis.set_title("label-free selection on the synthetic benchmark (bars: mean over shifts, dots: shifts)")
    axis.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("runs/validator_calibration"),
        help="generated sets and run directories (shared with synth_calibration.py; reused)",
    )
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--eval-every", type=int, default=10, help="UDA iterations between evaluations")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (1 thread each)")
    parser.add_argument(
        "--uda-set",
        dest="uda_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the UDA runs, e.g. optim.iterations=60",
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="also write the output to this markdown file"
    )
    parser.add_argument("--plot", type=Path, default=Path("validator_calibration.png"))
    args = parser.parse_args()

    sets = {shift: synthetic_set(args.work, shift) for shift in args.shifts}
    sources, runs = uda_jobs(args, sets)
    run_jobs(sources, args.parallel)
    run_jobs(runs, args.parallel)
    results = {shift: audit(experiment(args.work, shift, args.variants, args.seeds)) for shift in args.shifts}
    frame = table(results)
    report = Report()
    header("Validator calibration on the synthetic benchmark", report.say)
    lines = [
        f"Shifts {args.shifts}, seeds {args.seeds}, variants {args.variants}; the UDA stage above with "
        f"eval.every={args.eval_every} and {args.uda_overrides or 'no other overrides'}.",
        "",
        "Regret: target mIoU points (%) below the oracle's choice (study.selection): *checkpoint* within "
        "each run "
        "(mean over runs), *configuration* = which variant, every run at its last checkpoint (mean over "
        "seeds); "
        "*worst*: worst run / worst single seed; weighted Spearman: powerful-benchmarker's weighting; all "
        "means "
        "over shifts. Ordered by the mean of the two regrets.",
        "",
        markdown(frame),
        "",
        f"![regret per validator]({args.plot.name})",
    ]
    for line in lines:
        report.say(line)
    plot(frame, args.plot)
    report.write(args.report)


if __name__ == "__main__":
    main()
