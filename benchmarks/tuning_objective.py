"""Which label-free objective picks each variant's hyperparameters closest to the oracle: a search space's
tuning experiment run again on a world and seeds its own study never uses, every objective audited per
variant.

A `tune` experiment keeps one configuration per variant, so the question for its objective is the one
`study.selection.variant_audit` answers: within each variant, how far below the variant's best configuration
(by target mIoU, at the last checkpoint, mean over seeds) is the one the objective picks. This script takes
the experiment out of `--space` as written (its grids and UDA stage), replaces its seeds with `--seeds`, drops
every other experiment, generates the synthetic benchmark from `--world` (a generator seed other than the
default 0 that `make quickstart` and the shipped studies use), runs the study with `msl-study run` (resumed
when already there) and prints one row per objective: mean and worst regret over the variants, how many picks
lie on an edge of their grid, and the within-variant rank correlation. The target labels only score; choose
the objective from this table, then run the real study on its own seeds.

Usage: python benchmarks/tuning_objective.py [--space search_spaces/synth_paper.yaml] [--experiment tune]
           [--world 1] [--seeds 40 41 42] [--work DIR] [--report FILE.md]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from synth_runs import Report, header

from msl.data.synth import generate
from study.decide import TARGET
from study.results import load_study
from study.selection import LABEL_FREE_MODES, variant_audit, with_study_validators

ORACLE = "oracle: target mIoU"


def calibration_space(space: Path, experiment: str, seeds: list[int]) -> dict:
    """`space` with only `experiment`, on `seeds`, under the name `<name>_objective`."""
    given = yaml.safe_load(space.read_text())
    if experiment not in given.get("experiments", {}):
        raise SystemExit(f"{space}: no experiment {experiment!r} (it has {', '.join(given['experiments'])})")
    chosen = dict(given["experiments"][experiment], seeds=seeds)
    return {**given, "name": f"{given['name']}_objective", "experiments": {experiment: chosen}}


def run_study(space: dict, world: int, work: Path) -> Path:
    """Generate world `world` under `work` (once), run the calibration study there; its directory."""
    data = work / f"synth_world{world}"
    if not (data / "synth.json").is_file():
        generate(data, seed=world, progress=False)
    path = work / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    command = [str(Path(sys.executable).with_name("msl-study")), "run", str(path), "--storage", str(work)]
    subprocess.run(command, check=True, env={**os.environ, "MSL_SYNTH": str(data)})
    return work / space["name"]


def audit_table(evals: pd.DataFrame, objective: str) -> pd.DataFrame:
    """One row per label-free objective (and the oracle): variant-level regret in mIoU points."""
    candidates = {
        name: mode for name, mode in LABEL_FREE_MODES.items() if name in evals and evals[name].notna().any()
    }
    rows = []
    for name, mode in {**candidates, ORACLE: "max"}.items():
        result = variant_audit(evals, TARGET if name == ORACLE else name, mode)
        label = f"{name} (the space's objective)" if name == objective else name
        rows.append(
            {
                "objective": label,
                "mean regret": 100 * result["regret"],
                "worst regret": 100 * result["worst_regret"],
                "picks on an edge": f"{result['edge_picks']} of {result['variants']}",
                "Spearman within variants": result["spearman"],
            }
        )
    return pd.DataFrame(rows).set_index("objective").sort_values("mean regret", kind="stable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=Path("search_spaces/synth_paper.yaml"))
    parser.add_argument("--experiment", default="tune", help="the space's tuning experiment")
    parser.add_argument("--world", type=int, default=1, help="generator seed of the calibration world")
    parser.add_argument("--seeds", type=int, nargs="+", default=[40, 41, 42])
    parser.add_argument("--work", type=Path, default=Path("runs/tuning_objective"))
    parser.add_argument("--report", type=Path, default=None, help="also write the output to this file")
    args = parser.parse_args()
    if args.world == 0:
        parser.error("--world 0 is the world the shipped studies report on; calibrate on another")
    space = calibration_space(args.space, args.experiment, args.seeds)
    args.work.mkdir(parents=True, exist_ok=True)
    study = run_study(space, args.world, args.work)
    exp = load_study(study).experiment(args.experiment)
    evals = with_study_validators(exp)
    report = Report()
    header("Which objective tunes each variant closest to the oracle", report.say)
    report.say(
        f"Experiment `{args.experiment}` of `{args.space}` (its grids and stage as written) on generator world "
        f"{args.world}, seeds {args.seeds}: {exp.trials['variant'].nunique()} variants, "
        f"{len(exp.trials)} trials. Per variant, the configuration with the objective's best mean over seeds "
        "at the last checkpoint against the variant's best by target mIoU; *regret* in mIoU points, mean and "
        "worst over the variants searched; *picks on an edge*: variants whose pick is the smallest or largest "
        "value of a searched key; Spearman: of objective and target mIoU over configurations, within variants."
    )
    report.say()
    report.say(audit_table(evals, space["metric"]).to_markdown(floatfmt=".2f"))
    if args.report:
        report.write(args.report)


if __name__ == "__main__":
    main()
