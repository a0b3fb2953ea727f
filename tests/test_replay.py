"""`msl-study replay` (study/replay.py) on a study directory written here, against numbers worked out by hand.
The real run that the replay must equal is in test_pruned_study.py (slow)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from study import layout
from study.cli import main

# Four trials in the order Tune created them (the counter ending the id), evaluated 4 times: target_im (lower
# is better) and the target mIoU (the audit) at each evaluation.
CURVES = {
    "maxsquare_s0_a_00000": ([0.50, 0.40, 0.35, 0.30], [0.30, 0.32, 0.34, 0.36]),
    "maxsquare_s0_a_00001": ([0.45, 0.42, 0.41, 0.40], [0.31, 0.31, 0.31, 0.31]),
    "maxsquare_s0_a_00002": (
        [0.60, 0.50, 0.30, 0.20],
        [0.20, 0.30, 0.40, 0.50],
    ),  # best at the end, last at 1
    "maxsquare_s0_a_00003": ([0.55, 0.41, 0.44, 0.43], [0.25, 0.26, 0.27, 0.28]),
}


def _write_study(root, curves=CURVES, every: int = 1, status: str = "finished"):
    """A study directory as the runner leaves it, for the files `study.results.load_study` reads."""
    study = root / "study"
    layout.write_json(study / layout.STUDY_FILE, {"name": "study", "experiments": ["sweep"]})
    plan = {
        "experiment": "sweep",
        "metric": "target_im",
        "mode": "min",
        "variants": {"maxsquare": {}},
        "searched": {"loss.lambda_target": {"loguniform": [0.01, 1.0]}},
        "max_iterations": every * len(next(iter(curves.values()))[0]),
        "seeds_per_sample": 1,
    }
    layout.write_json(layout.experiment_dir(study, "sweep") / layout.PLAN_FILE, plan)
    for index, (name, (objective, target)) in enumerate(curves.items()):
        trial = layout.trials_dir(study, "sweep") / name
        info = {
            "trial_name": name,
            "variant": "maxsquare",
            "seed": 0,
            "params": {"loss.lambda_target": index},
        }
        layout.write_json(trial / layout.TRIAL_FILE, info)
        ran = len(objective) if status == "finished" or index else 1
        layout.write_json(
            trial / layout.STATUS_FILE,
            {"status": status if not index else "finished", "iterations": every * ran},
        )
        records = [
            {
                "iteration": every * (i + 1),
                "target_im": o,
                "oracle_miou": t,
                "elapsed_s": float(i),
                "time": 0.0,
            }
            for i, (o, t) in enumerate(zip(objective[:ran], target[:ran], strict=True))
        ]
        (trial / "run").mkdir()
        (trial / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return study


def _replay(study, *args):
    return main(["replay", str(study), "--experiment", "sweep", *map(str, args)])


def test_each_setting_says_what_it_used_and_what_it_lost(tmp_path, capsys):
    study = _write_study(tmp_path)
    assert _replay(study, "--scheduler", "successive_halving,top_k", "--grace", 1, "--reduction", 2) == 0
    table = pd.read_csv(study / "replay" / "sweep.csv").set_index("scheduler")
    # Full run: 16 trial-iterations; the pick is trial 2 (0.20 at iteration 4, target 0.50).
    assert table.at["full run", "trial-iterations"] == 16
    # Successive halving, rungs 1 and 2: at 1 trials 1 (0.45) and 0 (0.50) go on, 2 and 3 stop (1 iteration
    # each); at 2, trial 0 (0.40) goes on and 1 (0.42) stops. 1 + 2 + 1 + 4 = 8 trial-iterations; the pick
    # is trial 0 at iteration 4 (0.30, target 0.36): 0.10 of the objective and 14 points of target lost.
    halving = table.loc["successive_halving"]
    assert (halving["trial-iterations"], halving["% of full"]) == (8, 50.0)
    assert not halving["full pick kept"]
    assert halving["target_im lost"] == pytest.approx(0.10)
    assert halving["target mIoU lost (audit)"] == pytest.approx(14.0)
    # top_k: the best 2 of 4 at iteration 1 (trials 1 and 0) run to the end: 1 + 1 + 4 + 4 = 10.
    assert table.at["top_k", "trial-iterations"] == 10
    out = capsys.readouterr().out
    assert "| successive_halving |" in out and "50%" in out
    assert (study / "replay" / "sweep.md").read_text().startswith("# Replay of experiment 'sweep'")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--scheduler", "hyperbnd"],
            "--scheduler: unknown scheduler 'hyperbnd'; choose from asha, hyperband, successive_halving, "
            "top_k",
        ),
        (
            ["--grace", 1, "--reduction", 2],
            "--grace 1 --reduction 2: the rung at iteration 1 is not an evaluation iteration of experiment "
            "'sweep' (every trial evaluated at 2, 4, 6, 8)",
        ),
        (
            ["--grace", 8],
            "--grace 8: the grace period must be below the 8 iterations of a full trial",
        ),
    ],
)
def test_a_setting_that_cannot_be_replayed_fails_with_one_line(tmp_path, capsys, args, message):
    study = _write_study(tmp_path, every=2)
    assert _replay(study, *args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_an_experiment_that_was_itself_pruned_is_named_with_its_short_trials(tmp_path, capsys):
    study = _write_study(tmp_path, status="stopped")
    assert _replay(study) == 2
    err = capsys.readouterr().err
    assert (
        "experiment 'sweep' has trials that did not run to iteration 4: maxsquare_s0_a_00000 (stopped at 1); "
        "replay needs an experiment whose trials all ran to the end (scheduler fifo)"
    ) in err
    assert len(err.strip().splitlines()) == 1


def test_trials_are_replayed_in_the_order_tune_created_them():
    from study.replay import trial_order
    from study.results import ExperimentResults

    def order(names: list[str], started: list[float]) -> list[str]:
        trials = pd.DataFrame({"trial_name": names})
        evals = pd.DataFrame({"trial_name": names, "wall_time": [t + 5.0 for t in started], "elapsed_s": 5.0})
        return trial_order(ExperimentResults("sweep", {}, trials, evals))

    # Tune's variant generator counts its trials: the counter decides, whatever the start times
    counted = ["maxsquare_s0_3662d_00010", "maxsquare_s0_3662d_00002", "maxsquare_s0_3662d_00001"]
    assert order(counted, [0.0, 1.0, 2.0]) == counted[::-1]
    # a searcher's own ids (Optuna's 8 hex digits) say nothing: the start times decide
    searched = ["iw_s0_6c24378a", "iw_s0_00000001", "iw_s0_b5202e59"]
    assert order(searched, [3.0, 2.0, 1.0]) == searched[::-1]


def test_an_experiment_of_several_variants_is_refused(tmp_path, capsys):
    study = _write_study(tmp_path)
    trial = layout.trials_dir(study, "sweep") / "maxsquare_s0_a_00001" / layout.TRIAL_FILE
    layout.write_json(trial, {**layout.read_json(trial), "variant": "entropy"})
    assert _replay(study) == 2
    err = capsys.readouterr().err
    assert "experiment 'sweep' has trials of 2 variants (entropy, maxsquare)" in err
