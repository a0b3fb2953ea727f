"""Fake study directories for the tests of study/: the files the runner writes (plan.json, trial.json,
status.json, a run's metrics.jsonl), written through `study.layout` with numbers the tests choose."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from msl.checkpoint import save_atomic
from msl.labels import class_names
from msl.objectives import is_oracle
from msl.run_dir import RunDir
from study import layout

CLASSES = class_names(19)
ABSENT = (16, 17)  # train, motorcycle: never in the labels nor predicted (null IoU)
ITERATIONS = (10, 20, 30)


def study_file(study: Path, experiments: list[str], name: str = "fake") -> None:
    """The study's own record (study.json), as the runner writes it when it creates the study."""
    layout.write_json(
        study / layout.STUDY_FILE,
        {
            "name": name,
            "created": "2025-01-01T00:00:00+00:00",
            "git_revision": "abc123",
            "versions": {},
            "experiments": experiments,
        },
    )


def record(iteration: int, oracle: float, source_val: float, max_square: float) -> dict:
    iou = [None if c in ABSENT else round(oracle + 0.01 * (c - 9), 6) for c in range(19)]
    return {
        "iteration": iteration,
        "lr": 0.01,
        "loss_source_ce": 0.5,
        "source_val_miou": source_val,
        "source_val_iou": [source_val] * 19,
        "oracle_miou": oracle,
        "oracle_miou16": oracle,
        "oracle_miou13": oracle + 0.05,
        "oracle_iou": iou,
        "oracle_pixel_acc": 0.8,
        "target_entropy": 1.0 - oracle,
        "target_im": None,
        "target_max_square": max_square,
        "elapsed_s": float(iteration),
        "is_best": False,
    }


def plan(
    name: str,
    *,
    metric: str,
    mode: str,
    variants: list[str],
    seeds: list[int],
    searched: dict,
    scheduler: str,
    num_trials: int,
    **more,
) -> layout.Plan:
    """A plan as the runner writes it; `more`: any other `layout.Plan` field (e.g. `confirm`)."""
    return layout.Plan(
        experiment=name,
        metric=metric,
        mode=mode,
        oracle=is_oracle(metric),
        variants={variant: {} for variant in variants},
        seeds=seeds,
        searched=searched,
        scheduler={"name": scheduler},
        search={"algorithm": "random", "num_samples": 1, "seed": 0},
        num_samples=1,
        num_trials=num_trials,
        max_iterations=ITERATIONS[-1],
        eval_every=10,
        benchmark="gta5_to_cityscapes",
        num_classes=19,
        class_names=CLASSES,
        **more,
    )


def write_trial(
    study,
    experiment: str,
    name: str,
    *,
    variant: str,
    seed: int,
    params: dict,
    status: dict | None,
    records: list[dict],
    truncated_line: str | None = None,
    started: float | None = None,
) -> None:
    directory = layout.trials_dir(study, experiment) / name
    layout.write_json(
        directory / layout.TRIAL_FILE,
        {
            "trial_name": name,
            "experiment": experiment,
            "variant": variant,
            "seed": seed,
            "params": params,
            "overrides": params,
            "source_run": f"sources/seed{seed}",
        },
    )
    if started is not None:
        os.utime(directory / layout.TRIAL_FILE, (started, started))
    if status is not None:
        layout.write_json(directory / layout.STATUS_FILE, status)
    if records or truncated_line:
        metrics = RunDir(directory / layout.RUN_DIR).metrics
        metrics.parent.mkdir(parents=True)
        metrics.write_text("".join(json.dumps(r) + "\n" for r in records) + (truncated_line or ""))


def finished(iterations: int = ITERATIONS[-1]) -> dict:
    return {"status": "finished", "iterations": iterations, "error": None, "reason": "ran every iteration"}


def checkpoint(path: Path, iteration: int) -> Path:
    """A minimal msl training checkpoint written at `iteration` (every entry a resume needs)."""
    payload = {"model": {"w": torch.zeros(2)}, "optimizer": {}, "iteration": iteration, "rng": {}}
    return save_atomic({**payload, "config": {}, "history": [], "best": None}, path)
