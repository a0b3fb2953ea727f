"""The study-level view in TensorBoard: `tensorboard --logdir STUDY` shows every trial's curves (each run's
`tensorboard/` folder, named by experiment and trial, which starts with its variant) and, in its HParams
dashboard, one row per run of every experiment.

Each row is a session under `<experiment>/hparams/<row>/`: the experiment, variant, seed, searched
parameters, status and iterations run as hyperparameters, and as metrics the objective at the checkpoint the
report selects (`study.decide.select`), the target mIoU there (`selected_target_miou`) and at the run's last
evaluation (`final_target_miou`). TensorBoard builds the table from the sessions themselves (no experiment
summary is written), so that the experiments of a study share one table.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from study import layout
from study.decide import select
from study.results import ExperimentResults, load_study, param_column, python_value

HPARAMS_DIR = "hparams"
TARGET = "oracle_miou"


def hparams_dir(study: Path, experiment: str) -> Path:
    return layout.experiment_dir(study, experiment) / HPARAMS_DIR


def _number(value) -> float | None:
    value = python_value(value)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _sessions(exp: ExperimentResults) -> list[tuple[str, dict, dict]]:
    """(row name, hyperparameters, metrics) of each run of the experiment."""
    picks = select(exp).picks.set_index("trial_name")
    sessions = []
    for row in exp.trials.to_dict("records"):
        hparams = {
            "experiment": exp.name,
            "variant": row["variant"],
            "seed": row["seed"],
            "status": row["status"],
            "iterations": row["iterations"],
            **{key: row.get(param_column(key)) for key in exp.searched},
        }
        hparams = {key: _scalar(value) for key, value in hparams.items() if _present(value)}
        metrics = {}
        if row["trial_name"] in picks.index:
            pick = picks.loc[row["trial_name"]]
            metrics[f"objective/{exp.plan.metric}"] = _number(pick["objective"])
            for name, label in (("selected", pick["selected_row"]), ("final", pick["final_row"])):
                if _present(label):
                    metrics[f"{name}_target_miou"] = _number(100 * exp.evals.at[int(label), TARGET])
        sessions.append((row["trial_name"], hparams, {k: v for k, v in metrics.items() if v is not None}))
    return sessions


def _scalar(value) -> bool | int | float | str:
    """A hyperparameter as TensorBoard takes it: a number, a string or a bool; anything else (a list drawn
    by `choice`) as its text."""
    value = python_value(value)
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def write_hparams(study: Path, experiment: str) -> Path:
    """(Re)write the HParams sessions of one experiment; returns their folder."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    exp = load_study(study).experiment(experiment)
    folder = hparams_dir(study, experiment)
    shutil.rmtree(folder, ignore_errors=True)
    for name, hparams, metrics in _sessions(exp):
        _, start, end = hparams_summaries(hparams, metrics)
        with SummaryWriter(str(folder / name)) as writer:
            writer.file_writer.add_summary(start)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, global_step=int(hparams.get("iterations", 0)))
            writer.file_writer.add_summary(end)
    return folder
