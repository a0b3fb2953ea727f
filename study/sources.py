"""The source models a study's trials adapt from: one per seed and source config, trained first (together, in
full rounds of the cluster's CPUs or sharing them: `source_cpus`) as Ray tasks, or reused when a complete run
with the same key is already in the study's `sources/` folder. `ensure_sources` runs on the driver (printing
their progress with an ETA every 30 s while they train), `_train_source` in a Ray worker.
"""

from __future__ import annotations

import math
import time
import traceback
from datetime import datetime
from pathlib import Path

import ray

from msl.run_dir import RunDir
from msl.trainer import train
from study import layout
from study.progress import eta_words, log
from study.source_progress import source_progress
from study.space import Resources, Space, source_key
from study.worker import in_worker

# How much longer N source models take all at once on C cores than N / C rounds of them at full speed: more
# processes than cores share caches and memory bandwidth (results/benchmarks/source_waves.md: 4 models on 2
# cores took 73.6 s at once, 60.7 s in two rounds).
SHARING_SLOWDOWN = 1.2


def source_cpus(resources: Resources, cluster_cpus: float, count: int) -> float:
    """CPUs each of `count` source models asks for. With GPUs, or when the models fill their rounds of the
    cluster well, what a trial asks for (4 models on 2 CPUs: two rounds of two); on CPUs only, when the last
    round would leave cores idle for longer than sharing costs, a share of the cluster so that all start at
    once (3 models on 2 CPUs: 2/3 each, not two and then one while a core idles)."""
    if resources.gpu or count == 0:
        return resources.cpu
    at_a_time = max(1, int(cluster_cpus // resources.cpu))  # models that run at once at a trial's CPUs
    if count <= at_a_time or math.ceil(count / at_a_time) <= SHARING_SLOWDOWN * count / at_a_time:
        return resources.cpu
    return cluster_cpus / count


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
    reused: set[str] = set()  # keys of complete models (experiments sharing a seed share its model)
    for experiment in space.experiments:
        for seed in experiment.seeds:
            cfg = space.source_config(experiment, seed)
            run_dir = layout.sources_dir(study_dir) / source_key(cfg)
            checkpoints[experiment.name][seed] = str(RunDir(run_dir).best)
            if source_key(cfg) in to_train or source_key(cfg) in reused:
                continue
            if _source_is_complete(run_dir, cfg.optim.iterations):
                log(f"source model for seed {seed}: reusing {run_dir}")
                reused.add(source_key(cfg))
            else:
                to_train[source_key(cfg)] = (cfg, run_dir, experiment)
    if not to_train:
        return checkpoints
    cluster_cpus = ray.cluster_resources().get("CPU", 0.0)
    pending, asked = {}, 0.0  # CPUs the models submitted so far ask for
    for key, (cfg, run_dir, experiment) in to_train.items():
        cpus = source_cpus(experiment.resources, cluster_cpus, len(to_train))
        task = ray.remote(_train_source).options(
            num_cpus=cpus, num_gpus=experiment.resources.gpu, max_retries=experiment.retries
        )
        asked += cpus
        when = "training" if asked <= cluster_cpus + 1e-9 else "queued until a CPU is free, then training"
        log(
            f"source model for seed {cfg.runtime.seed}: {when} {cfg.optim.iterations} iterations in "
            f"{run_dir} ({cpus:.2g} CPU)"
        )
        pending[key] = task.remote(in_worker(cfg, cpus), str(run_dir))
    runs = {Path(run_dir): cfg.optim.iterations for cfg, run_dir, _ in to_train.values()}
    _wait_for_sources(pending, runs, study_dir / layout.DRIVER_LOG)
    return checkpoints


class SourceModelError(RuntimeError):
    """A source model's task failed; its message is one line, the worker's traceback is in the study's log."""


def _wait_for_sources(
    pending: dict[str, ray.ObjectRef], runs: dict[Path, int], log_file: Path, every_s: float = 30.0
) -> None:
    """Wait for the source models' tasks, saying when each is done and, every `every_s` seconds, the
    iterations done of all (their progress.json) with an ETA at the pace so far. The first that fails stops
    the others (`_stop_on_error`)."""
    started, at_start = time.perf_counter(), source_progress(runs).done
    keys = {ref: key for key, ref in pending.items()}
    next_line = started + every_s
    while keys:
        ready, _ = ray.wait(list(keys), num_returns=1, timeout=max(0.0, next_line - time.perf_counter()))
        for ref in ready:
            try:
                ray.get(ref)
            except ray.exceptions.RayError as error:
                _stop_on_error(keys.pop(ref), error, keys, log_file)
            log(f"source model {keys.pop(ref)} done ({time.perf_counter() - started:.0f} s since the start)")
        if keys and time.perf_counter() >= next_line:
            progress, elapsed = source_progress(runs), time.perf_counter() - started
            eta = eta_words(progress.done - at_start, elapsed, progress.total - progress.done)
            log(f"{progress.line()}, {elapsed / 60:.1f} min{eta}")
            next_line += every_s


def _stop_on_error(key: str, error: Exception, others: dict, log_file: Path) -> None:
    """Cancel the other source models' tasks, write every traceback to `log_file` and raise one line naming
    it: the worker's traceback never reaches the terminal, nor do Ray's reports of tasks nobody read."""
    texts = [f"source model {key}:\n{''.join(traceback.format_exception(error))}"]
    for ref, other in others.items():
        ray.cancel(ref, force=True)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as cancelled:  # read, so that Ray does not report it as unhandled
            texts.append(f"source model {other}: {type(cancelled).__name__} {cancelled}")
    with log_file.open("a") as file:
        file.write(f"--- {datetime.now():%Y-%m-%d %H:%M:%S}\n" + "\n".join(texts) + "\n")
    cause = getattr(error, "cause", None) or error
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    raise SourceModelError(f"source model {key} failed: {first} (the traceback is in {log_file})") from None
