"""Which label-free validator should choose each variant's configuration in a tuning experiment (a space's
`choose_by`): the space's tuning experiment run again on a world and seeds that its own study never uses,
every validator audited per variant.

A `tune` experiment keeps one configuration per variant, so the question is the one
`study.selection.variant_audit` answers, here under the study's own rule (`study.decide`): the space's metric
picks each trial's checkpoint, a validator scores each configuration by its mean over seeds at those
checkpoints, and the regret is how far the pick's target mIoU falls below the variant's best configuration's.
This script takes the experiment out of `--space` as written (its grids and UDA stage), replaces its
seeds with `--seeds`, drops every other experiment, generates the synthetic benchmark from `--world` (a
generator seed other than the default 0 that `make quickstart` and the shipped studies use), runs the study
with `msl-study run` (resumed when already there) and prints one row per validator: mean and worst regret
over the variants, how many picks lie on an edge of what was searched, and the within-variant rank
correlation. The target labels only score; choose from this table, then run the real study on its own world
and seeds.

Usage: python benchmarks/tuning_objective.py [--space search_spaces/synth_paper.yaml] [--experiment tune]
           [--world 1] [--seeds 40 41 42] [--work DIR] [--report FILE.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from synth_runs import Report, header

from msl.data.synth import generate
from msl.objectives import LABEL_FREE_MODES, METRIC_MODES
from study import layout
from study.decide import TARGET, selected_checkpoints
from study.results import ExperimentResults, load_study, param_column
from study.selection import variant_audit, with_study_validators
from study.tables import markdown_table, plain

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
    path, study = work / "space.yaml", work / space["name"]
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    msl_study = str(Path(sys.executable).with_name("msl-study"))
    started = (study / layout.STUDY_FILE).is_file()
    command = (
        [msl_study, "resume", str(study)]
        if started
        else [msl_study, "run", str(path), "--storage", str(work)]
    )
    subprocess.run(command, check=True, env={**os.environ, "MSL_SYNTH": str(data)})
    return study


def audit_table(exp: ExperimentResults, objective: str) -> pd.DataFrame:
    """One row per label-free validator (and the oracle): variant-level regret in mIoU points when it chooses
    each variant's configuration (`choose_by`) at the checkpoints the space's metric selects."""
    evals = with_study_validators(exp)
    checkpoints = selected_checkpoints(exp, evals)
    candidates = {
        name: mode for name, mode in LABEL_FREE_MODES.items() if name in evals and evals[name].notna().any()
    }
    rows = []
    for name, mode in {**candidates, ORACLE: "max"}.items():
        result = variant_audit(checkpoints, TARGET if name == ORACLE else name, mode)
        on_edge = sum(bool(exp.edges(variant, config)) for variant, config in result["picks"].items())
        label = f"{name} (the space's metric)" if name == objective else name
        rows.append(
            {
                "validator": label,
                "mean regret": plain(100 * result["regret"], 1),
                "worst regret": plain(100 * result["worst_regret"], 1),
                "picks on an edge": f"{on_edge} of {result['variants']}",
                "Spearman within variants": plain(result["spearman"]),
                "can be a space's metric": "oracle"
                if name == ORACLE
                else "yes"
                if name in METRIC_MODES
                else "no: choose_by only",
            }
        )
        rows[-1]["regret"] = result["regret"]
    ordered = pd.DataFrame(rows).sort_values("regret", kind="stable")
    return ordered.drop(columns="regret").reset_index(drop=True)


# Each variant's grid cut at either end: a validator whose pick follows the grid (a consensus measure seeks
# its centre, a loss-like one its top) moves when the grid moves; the oracle's pick only when it was cut away.
SUBGRIDS = {
    "whole grid": slice(None),
    "without the smallest value": slice(1, None),
    "without the largest value": slice(None, -1),
    "without the 2 smallest": slice(2, None),
    "without the 2 largest": slice(None, -2),
}


def subgrid_table(exp: ExperimentResults, validators: list[str]) -> pd.DataFrame | None:
    """Per sub-grid (SUBGRIDS) and validator: mean regret over the variants, how many picks lie at an end of
    the sub-grid and how many moved from the whole grid's pick though it was kept, with the study-level
    validators computed again over the trials kept. None unless the experiment searches one key."""
    if len(exp.searched) != 1:
        return None
    key = param_column(exp.searched[0])
    rows, whole = [], {}  # whole: validator -> variant -> the value it picks from the whole grid
    for name, cut in SUBGRIDS.items():
        kept, kept_values = [], {}
        for variant, trials in exp.trials.groupby("variant", sort=False):
            values = sorted(trials[key].dropna().unique())
            kept_values[variant] = values[cut] if len(values) > 1 else values
            kept += trials.loc[
                trials[key].isin(kept_values[variant]) | trials[key].isna(), "trial_name"
            ].tolist()
        part = dataclasses.replace(
            exp,
            trials=exp.trials[exp.trials["trial_name"].isin(kept)],
            evals=exp.evals[exp.evals["trial_name"].isin(kept)],
        )
        checkpoints = selected_checkpoints(part, with_study_validators(part))
        value_of = dict(zip(checkpoints["config"], checkpoints[key], strict=False))
        row = {"grid": name}
        for validator in validators:
            mode = "max" if validator == ORACLE else LABEL_FREE_MODES[validator]
            result = variant_audit(checkpoints, TARGET if validator == ORACLE else validator, mode)
            picked = {variant: value_of[config] for variant, config in result["picks"].items()}
            whole.setdefault(validator, picked)
            at_end = sum(value in (min(kept_values[v]), max(kept_values[v])) for v, value in picked.items())
            moved = sum(
                value != whole[validator][variant] and whole[validator][variant] in kept_values[variant]
                for variant, value in picked.items()
            )
            row[validator] = f"{plain(100 * result['regret'], 1)} ({at_end} at an end, {moved} moved)"
        rows.append(row)
    return pd.DataFrame(rows)


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
    report = Report()
    header("Which validator should choose each variant's configuration", report.say)
    report.say(
        f"Experiment `{args.experiment}` of `{args.space}` (its grids and stage as written) on generator "
        f"world {args.world}, seeds {args.seeds}: {exp.trials['variant'].nunique()} variants, "
        f"{len(exp.trials)} trials. The space's metric ({space['metric']}) picks each trial's checkpoint; "
        "each validator then picks, per variant, the configuration with its best mean over seeds at those "
        "checkpoints (what `choose_by` does). *regret*: the variant's best configuration's target mIoU (mean "
        "over seeds at the same checkpoints) minus the pick's, in points, mean and worst over the variants "
        "searched; *picks on an edge*: variants whose pick is at an edge of what was searched; Spearman: "
        "validator against target mIoU over configurations, within variants. Study-level validators are "
        "computed from the saved softmax maps after the experiment: they can choose configurations "
        "(`choose_by`), not steer a search (`metric`).\n"
    )
    report.say()
    report.say(markdown_table(audit_table(exp, space["metric"])))
    validators = [ORACLE, "ensemble_agreement", space["metric"], "target_bnm"]
    if (table := subgrid_table(exp, list(dict.fromkeys(validators)))) is not None:
        report.say()
        report.say(
            "The same choice when each variant's grid loses values at one end (the study-level "
            "validators computed again over the trials kept): mean regret in points; in brackets, of the "
            "variants, how many picks sit at an end of the grid they were given, and how many moved away "
            "from the value picked from the whole grid although that value was still there. A validator "
            "whose pick moves with the grid seeks a place in the grid, not the best value."
        )
        report.say()
        report.say(markdown_table(table))
    if args.report:
        report.write(args.report)


if __name__ == "__main__":
    main()
