"""Hyperparameter importances (study/importance.py): Optuna's evaluators over the trials' selected
objectives."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from study import layout
from study.importance import MIN_TRIALS, importances
from study.results import ExperimentResults, param_column

SEARCHED = {"loss.lambda_target": {"loguniform": [0.1, 10.0]}, "optim.lr": {"uniform": [0.001, 0.01]}}
LAM, LR = map(param_column, SEARCHED)


def _experiment(seeds: list[int], trials_per_seed: int, objective) -> tuple[ExperimentResults, pd.DataFrame]:
    """Trials whose objective is `objective(lambda, lr, seed)`; `picks` as `decide.select` makes them."""
    rng = np.random.default_rng(0)
    trials, picks = [], []
    for seed in seeds:
        for index in range(trials_per_seed):
            name = f"iw_s{seed}_{index}"
            lam, lr = 10 ** rng.uniform(-1, 1), rng.uniform(0.001, 0.01)
            trials.append({"trial_name": name, LAM: lam, LR: lr})
            status = "stopped" if index == 0 else "finished"
            value = objective(lam, lr, seed)
            picks.append(
                {"trial_name": name, "variant": "iw", "seed": seed, "status": status, "objective": value}
            )
    plan = layout.Plan(experiment="sweep", metric="target_max_square", max_iterations=30, searched=SEARCHED)
    return ExperimentResults("sweep", plan, pd.DataFrame(trials), pd.DataFrame()), pd.DataFrame(picks)


def test_fanova_gives_the_parameter_the_objective_depends_on_nearly_all_importance():
    exp, picks = _experiment([0, 1, 2], 20, lambda lam, lr, seed: -((np.log10(lam) - 0.3) ** 2))
    table = importances(exp, picks, mode="max").set_index(["parameter", "evaluator"])
    assert table.loc[("loss.lambda_target", "fANOVA"), "mean"] > 0.9
    assert table.loc[("optim.lr", "fANOVA"), "mean"] < 0.1
    assert (
        table.loc[("loss.lambda_target", "PED-ANOVA"), "mean"] > table.loc[("optim.lr", "PED-ANOVA"), "mean"]
    )
    assert (table["seeds"] == 3).all() and (
        table["trials"] == 3 * 19
    ).all()  # the stopped trials are left out
    assert np.isfinite(table["std"]).all()


def test_each_seed_is_the_study_optuna_itself_would_evaluate():
    exp, picks = _experiment([4], 12, lambda lam, lr, seed: lam * 1000 * lr + lam)
    table = importances(exp, picks, mode="min").set_index(["parameter", "evaluator"])
    finished = picks[picks["status"] == "finished"].merge(exp.trials, on="trial_name")
    study = optuna.create_study(direction="minimize")
    distributions = {
        "loss.lambda_target": optuna.distributions.FloatDistribution(0.1, 10.0, log=True),
        "optim.lr": optuna.distributions.FloatDistribution(0.001, 0.01),
    }
    for row in finished.to_dict("records"):
        params = {"loss.lambda_target": row[LAM], "optim.lr": row[LR]}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=row["objective"])
        )
    expected = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=4)
    )
    for key, value in expected.items():
        assert table.loc[(key, "fANOVA"), "mean"] == pytest.approx(value)
    assert table["std"].isna().all()  # one seed: no spread


def test_too_few_trials_or_one_parameter_give_no_importance():
    exp, picks = _experiment([0], MIN_TRIALS, lambda lam, lr, seed: lam)  # one trial of them was stopped
    assert importances(exp, picks, mode="max").empty
    exp, picks = _experiment([0], 10, lambda lam, lr, seed: lam)
    exp.trials[LR] = 0.005  # searched, but every trial had the same value: only one parameter varies
    assert importances(exp, picks, mode="max").empty


@pytest.mark.parametrize("seeds", [(0, 1), (0,)])
def test_the_report_shows_the_importances_of_a_searched_experiment(tmp_path, seeds):
    from study.report import build_report
    from tests import fakes

    study = tmp_path / "study"
    layout.write_json(study / layout.STUDY_FILE, {"name": "imp", "experiments": ["sweep"]})
    plan = fakes.plan(
        "sweep",
        metric="target_max_square",
        mode="max",
        variants=["maxsquare"],
        seeds=list(seeds),
        searched=SEARCHED,
        scheduler="fifo",
        num_trials=10 * len(seeds),
    )
    layout.write_plan(study, plan)
    rng = np.random.default_rng(1)
    for seed in seeds:
        for index in range(10):
            lam, lr = float(10 ** rng.uniform(-1, 1)), float(rng.uniform(0.001, 0.01))
            records = [fakes.record(it, 0.4, 0.5, max_square=lam / 10 + seed) for it in (10, 20, 30)]
            params = {"loss": {"lambda_target": lam}, "optim": {"lr": lr}}
            name = f"maxsquare_s{seed}_{index}"
            fakes.write_trial(
                study,
                "sweep",
                name,
                variant="maxsquare",
                seed=seed,
                params=params,
                status=fakes.finished(),
                records=records,
            )
    build_report(study, tmp_path / "report")
    table = pd.read_csv(tmp_path / "report" / "tables" / "importance_sweep.csv").set_index(
        ["parameter", "evaluator"]
    )
    for evaluator in ("fANOVA", "PED-ANOVA"):  # the objective depends on lambda only
        assert (
            table.loc[("loss.lambda_target", evaluator), "mean"] > table.loc[("optim.lr", evaluator), "mean"]
        )
    assert (table["seeds"] == len(seeds)).all() and (table["trials"] == 10 * len(seeds)).all()
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "**Importance** of each searched parameter" in markdown
    rows = [
        line for line in markdown.splitlines() if line.startswith("| maxsquare ") and "| optim.lr " in line
    ]
    assert len(rows) == 1 and ("±" in rows[0]) == (len(seeds) > 1)  # one seed: no spread
