"""What runs inside a trial's Ray worker process: `run_trial`, the function trainable Tune calls with one
configuration, and what it needs to train, report to Tune and resume.

A trial runs `msl.trainer.train` (one run, or one per seed for `seeds_per_sample`), reporting each evaluation
to Tune with a Tune checkpoint holding the run's last checkpoint, so that ASHA, PBT, retries and
`Tuner.restore` all work. Everything here reaches the driver only through Tune (`tune.report`) and the
trial's own folder (`study.layout`); the driver's side is `study.runner`.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import ray
from ray import tune

from msl.checkpoint import load_checkpoint
from msl.config import TrainConfig
from msl.run_dir import RunDir
from msl.trainer import evaluates_at, train
from study import layout
from study.space import PbtScheduler, Space


def in_worker(cfg: TrainConfig, cpus: float) -> TrainConfig:
    """A config as a Ray worker runs it: no progress bar, and as many threads as the CPUs it holds."""
    threads = cfg.runtime.threads or max(1, int(cpus))
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, progress=False, threads=threads))


def _scalars(record: dict) -> dict[str, float]:
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_trial(
    config: dict,
    *,
    space: Space,
    experiment_name: str,
    study_dir: str,
    sources: dict,
    confirmed: dict[str, dict],
) -> None:
    """A Tune function trainable: one UDA training (or one per seed, see `_train_seeds`) whose evaluations are
    reported with checkpoints. `confirmed` maps variants to the configuration a confirmation runs them with
    (see `confirmed_configurations`)."""
    experiment = space.experiment(experiment_name)
    config = {**{k: v for k, v in config.items() if k != "case"}, **config.get("case", {})}
    variant, seeds = config["variant"], config.get("seeds") or [config["seed"]]
    params = {k: v for k, v in config.items() if k not in ("variant", "seed", "seeds")} | confirmed.get(
        variant, {}
    )
    trial_name = tune.get_context().get_trial_name()
    trial_dir = layout.trials_dir(Path(study_dir), experiment_name) / trial_name
    if _ended_before(trial_dir):  # the driver died before Tune recorded its end: say it again, run nothing
        runs = [trial_dir / layout.run_dir_name(seed if "seeds" in config else None) for seed in seeds]
        tune.report(_seed_mean({run: RunDir(run).read_metrics()[-1] for run in runs}))
        return
    cfgs = {
        seed: in_worker(
            space.trial_config(experiment, variant, seed, params, source_checkpoint=sources[seed]),
            experiment.resources.cpu,
        )
        for seed in seeds
    }
    source_runs = {seed: str(RunDir.of_checkpoint(sources[seed]).path) for seed in seeds}
    info = {"trial_name": trial_name, "experiment": experiment_name, "variant": variant}
    several = "seeds" in config
    seed_info = (
        {"seed": None, "seeds": seeds, "source_runs": source_runs}
        if several
        else {"seed": seeds[0], "source_run": source_runs[seeds[0]]}
    )
    overrides = experiment.trial_overrides(variant, params)
    layout.write_json(
        trial_dir / layout.TRIAL_FILE,
        {
            **info,
            **seed_info,
            "params": params,
            "overrides": overrides,
            "node_id": ray.get_runtime_context().get_node_id(),
        },
    )
    own_checkpoint_ok = not isinstance(experiment.scheduler, PbtScheduler)
    if several:
        _train_seeds(cfgs, trial_dir, own_checkpoint_ok)
    else:
        _train_one(cfgs[seeds[0]], trial_dir, own_checkpoint_ok)


def _ended_before(trial_dir: Path) -> bool:
    """Whether the trial ran to its end (or was stopped by its scheduler) before this start: its status.json
    says so. An errored trial is run again (`Tuner.restore(resume_errored=True)`)."""
    status = trial_dir / layout.STATUS_FILE
    return status.is_file() and layout.read_json(status)["status"] in ("finished", "stopped")


def _start(
    trial_dir: Path, run_dir: Path, restored, own_checkpoint_ok: bool, inside: str = ""
) -> Path | None:
    """The resume point of one run of a trial (`_resume_point`); a run that failed before its first
    checkpoint is moved aside so that it starts again."""
    resume_from = _resume_point(run_dir, restored, own_checkpoint_ok, inside)
    if resume_from is None and run_dir.exists():
        run_dir.rename(trial_dir / f"{run_dir.name}.failed-{datetime.now():%Y%m%d-%H%M%S}")
    return resume_from


def _train_one(cfg: TrainConfig, trial_dir: Path, own_checkpoint_ok: bool) -> None:
    run_dir = trial_dir / layout.RUN_DIR
    resume_from = _start(trial_dir, run_dir, tune.get_checkpoint(), own_checkpoint_ok)
    reported = []

    def report(record: dict, last: Path) -> None:
        with tempfile.TemporaryDirectory() as directory:
            shutil.copyfile(last, Path(directory) / last.name)
            tune.report(_scalars(record), checkpoint=tune.Checkpoint.from_directory(directory))
        reported.append(record["iteration"])

    record = train(cfg, run_dir, resume_from=resume_from, on_eval=report)
    if not reported:
        # The run was already complete (the driver died before Tune recorded it): say so again, without a
        # checkpoint: registering one would make Tune delete checkpoints its stale state still lists but that
        # were already deleted, and log an ERROR traceback for a trial that is fine.
        tune.report(_scalars(record))


def _train_seeds(cfgs: dict[int, TrainConfig], trial_dir: Path, own_checkpoint_ok: bool) -> None:
    """`seeds_per_sample`: one configuration trained on several seeds in turn, each run stopping after every
    evaluation and resuming from its checkpoint (which gives the run it would be straight through). After
    each evaluation the trial reports the mean over seeds of every scalar, which is what the scheduler's rungs
    and the searcher see, with a checkpoint holding each seed's last checkpoint in `s<seed>/`."""
    runs = {seed: trial_dir / layout.run_dir_name(seed) for seed in cfgs}
    restored = tune.get_checkpoint()
    resume = {
        seed: _start(trial_dir, run, restored, own_checkpoint_ok, f"s{seed}") for seed, run in runs.items()
    }
    cfg = next(iter(cfgs.values()))
    reached = min((_iteration(path) if path else 0) for path in resume.values())
    records = {}
    points = [i for i in range(reached + 1, cfg.optim.iterations + 1) if evaluates_at(i, cfg)]
    for point in points:
        for seed, run in runs.items():
            records[seed] = _advance(cfgs[seed], run, resume[seed], point)
            resume[seed] = RunDir(run).last
        with tempfile.TemporaryDirectory() as directory:
            for seed, last in resume.items():
                (Path(directory) / f"s{seed}").mkdir()
                shutil.copyfile(last, Path(directory) / f"s{seed}" / last.name)
            tune.report(_seed_mean(records), checkpoint=tune.Checkpoint.from_directory(directory))
    if not records:  # already complete: say so again, without a checkpoint (see `_train_one`)
        tune.report(_seed_mean({seed: RunDir(run).read_metrics()[-1] for seed, run in runs.items()}))


def _iteration(checkpoint: Path) -> int:
    return load_checkpoint(checkpoint, mmap=True)["iteration"]


def _advance(cfg: TrainConfig, run_dir: Path, resume_from: Path | None, point: int) -> dict:
    """One seed's run trained up to the evaluation at `point` (or its record there, when it got there before
    the trial was interrupted)."""
    if resume_from is not None and _iteration(resume_from) >= point:
        return next(r for r in RunDir(run_dir).read_metrics() if r["iteration"] == point)
    return train(cfg, run_dir, resume_from=resume_from, stop_after=point)


def _seed_mean(records: dict[int, dict]) -> dict[str, float]:
    """The mean over seeds of each scalar every seed's record has (NaN in any seed gives NaN)."""
    scalars = [_scalars(record) for record in records.values()]
    keys = set.intersection(*(set(values) for values in scalars))
    return {key: math.fsum(values[key] for values in scalars) / len(scalars) for key in sorted(keys)}


def _resume_point(
    run_dir: Path, restored: tune.Checkpoint | None, own_checkpoint_ok: bool, inside: str = ""
) -> Path | None:
    """Where a (re)started trial continues: the checkpoint Tune hands over (a retry, a resumed study, a PBT
    exploit), or the trial's own newer last checkpoint when the driver died after it was written but before
    Tune recorded it, so that no finished evaluation is redone. PBT must take Tune's (the donor's). Each
    checkpoint's iteration is read without reading its weights (`mmap`). `inside`: the folder in Tune's
    checkpoint that holds this run's (one seed's of several)."""
    run, candidates = RunDir(run_dir), []
    if restored is not None:
        with restored.as_directory() as directory:
            run.checkpoints.mkdir(parents=True, exist_ok=True)
            # A Tune checkpoint holds a copy of a last checkpoint under its own name (`report` in run_trial).
            shutil.copyfile(Path(directory) / inside / run.last.name, run.restored)
            candidates.append(run.restored)
    if own_checkpoint_ok and run.last.is_file():
        candidates.append(run.last)
    return max(candidates, key=_iteration, default=None)
