"""The source models a study's trials adapt from: one per seed and source config, trained first (all at once,
sharing the cluster's CPUs) as Ray tasks, or reused when a complete run with the same key is already in the
study's `sources/` folder. `ensure_sources` runs on the driver, `_train_source` in a Ray worker.
"""

from __future__ import annotations

import time
from pathlib import Path

import ray

from msl.run_dir import RunDir
from msl.trainer import train
from study import layout
from study.progress import log
from study.space import Resources, Space, source_key
from study.worker import in_worker


def source_cpus(resources: Resources, cluster_cpus: float, count: int) -> float:
    """CPUs each of `count` source models asks for. On CPUs only, the models share the cluster's CPUs so that
    all start at once (3 models on 2 CPUs: 2/3 each, not two and then one while a core idles); with GPUs they
    ask for what a trial asks for."""
    if resources.gpu or count == 0:
        return resources.cpu
    return min(resources.cpu, cluster_cpus / count)


def _source_is_complete(run_dir: Path, iterations: int) -> bool:
    run = RunDir(run_dir)
    records = run.read_metrics()
    return run.best.is_file() and bool(records) and records[-1].get("iteration") == iterations


def _train_source(cfg, run_dir: str) -> str:
    run = RunDir(run_dir)
    train(cfg, run.path, resume_from=run.last if run.last.is_file() else None)
    return str(run.best)


def ensure_sources(space: Space, study_dir: Path) -> dict[str, dict[int, str]]:
    """The source checkpoint of each experiment's seeds: an existing one with the same key, or trained now.
    The models of every experiment train together at the start, so that they share the CPUs (an experiment
    with one seed would otherwise leave cores idle while the next one waits)."""
    if space.source_checkpoint:
        return {e.name: dict.fromkeys(e.seeds, space.source_checkpoint) for e in space.experiments}
    checkpoints: dict[str, dict[int, str]] = {e.name: {} for e in space.experiments}
    to_train: dict[str, tuple] = {}  # source key -> (config, run dir, experiment whose resources it takes)
    for experiment in space.experiments:
        for seed in experiment.seeds:
            cfg = space.source_config(experiment, seed)
            run_dir = layout.sources_dir(study_dir) / source_key(cfg)
            checkpoints[experiment.name][seed] = str(RunDir(run_dir).best)
            if source_key(cfg) in to_train:
                continue
            if _source_is_complete(run_dir, cfg.optim.iterations):
                log(f"source model for seed {seed}: reusing {run_dir}")
            else:
                to_train[source_key(cfg)] = (cfg, run_dir, experiment)
    cluster_cpus = ray.cluster_resources().get("CPU", 0.0)
    pending = {}
    for key, (cfg, run_dir, experiment) in to_train.items():
        cpus = source_cpus(experiment.resources, cluster_cpus, len(to_train))
        task = ray.remote(_train_source).options(
            num_cpus=cpus, num_gpus=experiment.resources.gpu, max_retries=experiment.retries
        )
        log(
            f"source model for seed {cfg.runtime.seed}: training {cfg.optim.iterations} iterations in "
            f"{run_dir} ({cpus:.2g} CPU)"
        )
        pending[key] = task.remote(in_worker(cfg, cpus), str(run_dir))
    started = time.perf_counter()
    for key, ref in pending.items():
        ray.get(ref)
        log(f"source model {key} done ({time.perf_counter() - started:.0f} s since the start)")
    return checkpoints
