"""What ASHA saves on the quickstart sweep, and whether it finds the same configuration as running every trial.

Runs the `sweep` experiment of search_spaces/quickstart.yaml twice from the same Optuna seed, once with its ASHA
scheduler and once with FIFO (every sampled configuration to the end), then prints a table: trial-iterations
used, the configuration the label-free objective picks, and that pick's target mIoU (reported, never used to
choose). With fewer samples than TPE's random start-up trials, both runs sample the same configurations.

    MSL_SYNTH=data/synth python benchmarks/asha_vs_full.py --work /tmp/asha_vs_full
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from study.results import config_label, load_study

ROOT = Path(__file__).resolve().parent.parent


def run(space: dict, scheduler: dict, work: Path, name: str) -> Path:
    space = {**space, "name": name}
    space["experiments"] = {"sweep": {**space["experiments"]["sweep"], "scheduler": scheduler}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))  # key order = Optuna's sampling order
    subprocess.run(
        [str(Path(sys.executable).parent / "msl-study"), "run", str(path), "--storage", str(work)], check=True
    )
    return work / name


def summary(study_dir: Path) -> dict:
    experiment = load_study(study_dir).experiment("sweep")
    metric, mode = experiment.plan["metric"], experiment.plan["mode"]
    evals = experiment.evals.dropna(subset=[metric])
    best = evals.loc[evals[metric].idxmin() if mode == "min" else evals[metric].idxmax()]
    trial = experiment.trials.set_index("trial_name").loc[best["trial_name"]]
    params = {key.removeprefix("param:"): trial[key] for key in trial.index if key.startswith("param:")}
    return {
        "trial_iterations": int(experiment.trials["iterations"].sum()),
        "full_budget": int(experiment.plan["max_iterations"]) * len(experiment.trials),
        "pick": config_label(params),
        "iteration": int(best["iteration"]),
        "objective": float(best[metric]),
        "oracle_miou": 100 * float(best["oracle_miou"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the two studies")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    space = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    space["base"] = str(ROOT / "msl" / "configs" / "synth.yaml")
    asha = summary(run(space, space["experiments"]["sweep"]["scheduler"], args.work, "sweep_asha"))
    full = summary(run(space, {"name": "fifo"}, args.work, "sweep_full"))
    print(
        "| run | trial-iterations | of a full run | picked configuration | at iteration | target_im | target mIoU % |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in (("ASHA", asha), ("every trial to the end", full)):
        print(
            f"| {name} | {row['trial_iterations']} | {row['trial_iterations'] / row['full_budget']:.0%} | "
            f"{row['pick']} | {row['iteration']} | {row['objective']:.4f} | {row['oracle_miou']:.1f} |"
        )
    print(f"\nsame configuration picked: {asha['pick'] == full['pick']}")


if __name__ == "__main__":
    main()
