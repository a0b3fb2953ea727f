"""Running a study on Ray Tune: source models first, then each experiment's trials, resumable after a crash.

The study directory layout is `study.layout`'s. Trials are function trainables that run `msl.trainer.train`
with our iteration count as Tune's time attribute and a Tune checkpoint at every evaluation, so ASHA, PBT,
retries and `Tuner.restore` all work. Everything a trial needs travels as small plain data (the resolved space
and paths); datasets and models are built inside the trial.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune

from msl.checkpoint import load_checkpoint
from msl.config import TrainConfig, is_better, save_config
from msl.run_dir import RunDir
from msl.runinfo import expand_path, git_revision, package_versions
from msl.trainer import NonFiniteLossError, evaluates_at, train
from study import layout
from study.decide import confirmed_configurations
from study.progress import log
from study.space import (
    AshaScheduler,
    Experiment,
    PbtScheduler,
    Resources,
    Space,
    SpaceError,
    load_space,
    max_iterations,
    representative_config,
    source_key,
)

# Config keys holding paths whose `~` and `$VARIABLES` are expanded once, on the driver, before trials start.
PATH_KEYS = (("data", "source_root"), ("data", "target_root"), ("model", "weights"))


def expand_paths(space: Space) -> Space:
    """The space with the path keys expanded wherever they are given (the base config, an experiment's or a
    variant's `set`, `source.set`), then checked in the configs the study runs: a `$VARIABLE` that is not set
    is an error only in a path that a run reads, not in a base value that `set` replaces."""
    dotted = {f"{section}.{key}" for section, key in PATH_KEYS}

    def expand(value: Any) -> Any:
        return os.path.expanduser(os.path.expandvars(value)) if isinstance(value, str) else value

    def expand_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
        return {key: expand(value) if key in dotted else value for key, value in overrides.items()}

    base = yaml.safe_load(yaml.safe_dump(space.base))
    for section, key in PATH_KEYS:
        if base.get(section, {}).get(key):
            base[section][key] = expand(base[section][key])
    experiments = [
        dataclasses.replace(
            e,
            set=expand_overrides(e.set),
            variants={
                name: dataclasses.replace(v, set=expand_overrides(v.set)) for name, v in e.variants.items()
            },
        )
        for e in space.experiments
    ]
    checkpoint = expand_path(space.source_checkpoint) if space.source_checkpoint else None
    expanded = dataclasses.replace(
        space,
        base=base,
        source_overrides=expand_overrides(space.source_overrides),
        source_checkpoint=checkpoint,
        experiments=experiments,
    )
    for experiment in expanded.experiments:
        sources = (
            [] if checkpoint else [expanded.source_config(experiment, seed) for seed in experiment.seeds]
        )
        checks = [(cfg, PATH_KEYS) for cfg in sources]  # a trial's model.weights is its source checkpoint
        checks.append((representative_config(expanded, experiment), PATH_KEYS[:2]))
        for cfg, keys in checks:
            for section, key in keys:
                try:
                    expand_path(getattr(getattr(cfg, section), key))
                except ValueError as error:
                    raise SpaceError(
                        f"experiments.{experiment.name}: {cfg.stage} stage: {section}.{key}: {error}"
                    ) from None
    return expanded


def _resolved_space_yaml(space: Space, original: dict) -> str:
    """The space with its base config inlined and paths expanded: loadable from the study directory alone."""
    resolved = {k: v for k, v in original.items() if k not in ("base", "config")}
    resolved["config"] = space.base
    if space.source_checkpoint:
        resolved.setdefault("source", {})["checkpoint"] = space.source_checkpoint
    return yaml.safe_dump(resolved, sort_keys=False)


def _to_tune(spec: dict[str, Any]):
    """A checked distribution spec (study.space) as a Tune search-space object."""
    ((kind, args),) = spec.items()
    if kind == "choice":
        return tune.choice(args)
    if kind == "grid":
        return tune.grid_search(args)
    return getattr(tune, kind)(*args)  # uniform, loguniform, randint, quniform take their bounds in order


def connect(address: str | None) -> None:
    """Attach to a running cluster (`--address` or RAY_ADDRESS), or start a local Ray sized to this
    machine."""
    # Tune warns when it snapshots experiment state often; with a checkpoint per evaluation that is expected.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as error:
            raise ConnectionError(
                f"{error}. If the cluster uses token authentication (Ray >= 2.59 enables it for "
                "`ray start`), set RAY_AUTH_MODE=token here too; the token is read from "
                "RAY_AUTH_TOKEN or ~/.ray/auth_token"
            ) from error
        log(f"attached to the Ray cluster at {address}: {ray.cluster_resources()}")
    else:
        ray.init(include_dashboard=False, log_to_driver=False)
        log(f"started a local Ray instance: {ray.cluster_resources()}")


def check_resources(experiments: list[Experiment], nodes: list[dict[str, Any]]) -> None:
    """SpaceError unless some live node of the cluster (`ray.nodes()`) can hold one trial of each experiment:
    otherwise Tune would wait forever, and with `log_to_driver=False` without a word."""
    alive = [node["Resources"] for node in nodes if node.get("Alive")]
    for experiment in experiments:
        wanted = {"CPU": experiment.resources.cpu, "GPU": experiment.resources.gpu}
        if any(all(node.get(name, 0.0) >= amount for name, amount in wanted.items()) for node in alive):
            continue
        have = "; ".join(f"{node.get('CPU', 0.0):g} CPU and {node.get('GPU', 0.0):g} GPU" for node in alive)
        raise SpaceError(
            f"experiments.{experiment.name}.resources: a trial asks for {wanted['CPU']:g} CPU and "
            f"{wanted['GPU']:g} GPU on one node, but no node of the Ray cluster has that much (nodes: "
            f"{have or 'none'}); lower `resources` in the space or add such a node"
        )


def prepare_cluster(space: Space, address: str | None) -> None:
    """Connect to Ray and check that the cluster can run the space's trials at all."""
    connect(address)
    check_resources(space.experiments, ray.nodes())


# ------------------------------------------------------------------------------------------------------------
# Source models


def _in_worker(cfg: TrainConfig, cpus: float) -> TrainConfig:
    """A config as a Ray worker runs it: no progress bar, and as many threads as the CPUs it holds."""
    threads = cfg.runtime.threads or max(1, int(cpus))
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, progress=False, threads=threads))


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
            f"{run_dir} "
            f"({cpus:.2g} CPU)"
        )
        pending[key] = task.remote(_in_worker(cfg, cpus), str(run_dir))
    started = time.perf_counter()
    for key, ref in pending.items():
        ray.get(ref)
        log(f"source model {key} done ({time.perf_counter() - started:.0f} s since the start)")
    return checkpoints


# ------------------------------------------------------------------------------------------------------------
# Trials


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
    experiment = next(e for e in space.experiments if e.name == experiment_name)
    config = {**{k: v for k, v in config.items() if k != "case"}, **config.get("case", {})}
    variant, seeds = config["variant"], config.get("seeds") or [config["seed"]]
    params = {k: v for k, v in config.items() if k not in ("variant", "seed", "seeds")} | confirmed.get(
        variant, {}
    )
    trial_name = tune.get_context().get_trial_name()
    trial_dir = layout.trials_dir(Path(study_dir), experiment_name) / trial_name
    cfgs = {
        seed: _in_worker(
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
    overrides = {**experiment.set, **experiment.variants[variant].set, **params}
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
    if not reported:  # the run was already complete (the driver died before Tune recorded it): say so again,
        # without a checkpoint: registering one would make Tune delete checkpoints its stale state still lists
        # but that were already deleted, and log an ERROR traceback for a trial that is fine.
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


def _non_finite(result: dict, metric: str) -> str | None:
    """What in a trial's last result is NaN or infinite (the objective or a loss term), if anything."""
    for name in (metric, *sorted(k for k in result if k.startswith("loss_"))):
        value = result.get(name)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            return f"{name} is {value} at iteration {int(result.get('iteration', 0))}"
    return None


class StudyCallback(tune.Callback):
    """On the driver: writes each ended trial's status.json and prints progress with an ETA."""

    def __init__(self, study_dir: Path, experiment: Experiment, total_trials: int, iterations: int):
        self.study_dir, self.experiment = str(study_dir), experiment.name
        self.metric, self.mode, self.scheduler = experiment.metric, experiment.mode, experiment.scheduler.name
        self.total, self.iterations = total_trials, iterations
        self.ended: dict[str, str] = {}
        self.started = time.time()
        self.last_print = 0.0
        self.best = math.nan

    def _status(self, trial, status: str, error: str | None = None) -> None:
        result = trial.last_result or {}
        done = int(result.get("iteration", 0))
        if status == "finished" and (diverged := _non_finite(result, self.metric)):
            status, error = "diverged", diverged
        if status == "finished" and done < self.iterations:
            status = "stopped"
        if status == "error" and error and NonFiniteLossError.__name__ in error:
            status = "diverged"
        reason = {
            "stopped": f"stopped by the {self.scheduler} scheduler at iteration {done} of {self.iterations}",
            "error": "raised an error (after its retries)",
            "diverged": "diverged: a loss or the objective became NaN or infinite",
        }.get(status, "ran every iteration")
        directory = layout.trials_dir(Path(self.study_dir), self.experiment) / str(trial)
        layout.write_json(
            directory / layout.STATUS_FILE,
            {"status": status, "iterations": done, "error": error, "reason": reason},
        )
        self.ended[str(trial)] = status
        self._print(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if is_better(value := result.get(self.metric), self.best, self.mode):
            self.best = value
        self._print(force=False)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._status(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        message = None
        if trial.error_file and os.path.exists(trial.error_file):
            message = Path(trial.error_file).read_text().strip().splitlines()[-1][:500]
        self._status(trial, "error", message or "unknown error")

    def _print(self, force: bool) -> None:
        now = time.time()
        if not force and now - self.last_print < 30:
            return
        self.last_print = now
        done = len(self.ended)
        counts = {s: list(self.ended.values()).count(s) for s in layout.TRIAL_STATUSES}
        elapsed = now - self.started
        eta = f", ETA ~{elapsed / done * (self.total - done) / 60:.1f} min" if 0 < done < self.total else ""
        log(
            f"{self.experiment}: {done}/{self.total} trials ended ({counts['finished']} finished, "
            f"{counts['stopped']} stopped early, {counts['error']} errors, {counts['diverged']} diverged), "
            f"best {self.metric} so far {self.best:.4f}, {elapsed / 60:.1f} min{eta}"
        )


def _trial_name(trial) -> str:
    variant = trial.config.get("variant") or trial.config["case"]["variant"]
    seeds = trial.config.get("seeds") or [trial.config["seed"]]
    return f"{variant}_s{'-'.join(map(str, seeds))}_{trial.trial_id}"


def _scheduler(experiment: Experiment, iterations: int):
    spec = experiment.scheduler
    if isinstance(spec, AshaScheduler):
        return tune.schedulers.ASHAScheduler(
            time_attr="iteration",
            max_t=iterations,
            grace_period=spec.grace_period,
            reduction_factor=spec.reduction_factor,
        )
    if isinstance(spec, PbtScheduler):
        return tune.schedulers.PopulationBasedTraining(
            time_attr="iteration",
            perturbation_interval=spec.perturbation_interval,
            hyperparam_mutations={k: _to_tune(v) for k, v in spec.mutations.items()},
            quantile_fraction=spec.quantile_fraction,
            synch=spec.synch,
        )
    return None


def _searcher(experiment: Experiment, study_dir: Path):
    """Draws the configurations from `search.seed`, at most `max_concurrent` trials at once. Grid and random
    search: Tune's variant generator. Optuna's TPE keeps its study in a journal file of the experiment (no
    server): `optuna-dashboard` and `optuna.load_study(study_name=<experiment>,
    storage=JournalStorage(JournalFileBackend(path)))` read it."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if experiment.search.algorithm != "optuna":
        return BasicVariantGenerator(
            max_concurrent=experiment.max_concurrent or 0, random_state=experiment.search.seed
        )
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from ray.tune.search.optuna import OptunaSearch

    journal = layout.experiment_dir(study_dir, experiment.name) / layout.OPTUNA_JOURNAL
    storage = JournalStorage(JournalFileBackend(str(journal)))
    optuna = OptunaSearch(seed=experiment.search.seed, storage=storage, study_name=experiment.name)
    return ConcurrencyLimiter(optuna, experiment.max_concurrent) if experiment.max_concurrent else optuna


def _param_space(experiment: Experiment) -> dict[str, Any]:
    space: dict[str, Any] = {k: _to_tune(v) for k, v in experiment.params.items()}
    if experiment.seeds_per_sample > 1:  # every trial runs all the seeds
        seed: dict[str, Any] = {"seeds": list(experiment.seeds)}
    elif experiment.search.algorithm == "optuna":  # one seed (checked by the space)
        seed = {"seed": experiment.seeds[0]}
    else:
        seed = {"seed": tune.grid_search(experiment.seeds)}
    if experiment.search.algorithm == "optuna":  # one variant (checked by the space)
        return {"variant": next(iter(experiment.variants)), **seed, **space}
    if experiment.variant_params:  # each variant with its own grid: one grid over (variant, its values) cases
        cases = [
            {"variant": variant, **dict(zip(own, values, strict=True))}
            for variant in experiment.variants
            for own in [{k: v["grid"] for k, v in experiment.variant_params.get(variant, {}).items()}]
            for values in itertools.product(*own.values())
        ]
        return {"case": tune.grid_search(cases), **seed, **space}
    return {"variant": tune.grid_search(list(experiment.variants)), **seed, **space}


def _trainable(
    space: Space, experiment: Experiment, study_dir: Path, sources: dict[int, str], confirmed: dict[str, dict]
):
    trainable = tune.with_parameters(
        run_trial,
        space=space,
        experiment_name=experiment.name,
        study_dir=str(study_dir),
        sources=sources,
        confirmed=confirmed,
    )
    return tune.with_resources(trainable, dataclasses.asdict(experiment.resources))


def _searched(experiment: Experiment) -> dict[str, dict]:
    """Every searched key with its spec; a variant's own grids as {"grid per variant": {variant: values}}."""
    searched: dict[str, dict] = {}
    for variant in experiment.variants:
        for key, spec in experiment.searched_params(variant).items():
            if key in experiment.params:
                searched[key] = spec
            else:
                searched.setdefault(key, {"grid per variant": {}})["grid per variant"][variant] = spec["grid"]
    return searched


def _write_plan(
    space: Space, experiment: Experiment, study_dir: Path, iterations: int, confirmed: dict[str, dict]
) -> None:
    from msl.metrics import metric_class_names

    cfg = space.source_config(experiment, experiment.seeds[0])
    layout.write_json(
        layout.experiment_dir(study_dir, experiment.name) / layout.PLAN_FILE,
        {
            "experiment": experiment.name,
            "metric": experiment.metric,
            "mode": experiment.mode,
            "oracle": experiment.oracle,
            "variants": {name: variant.set for name, variant in experiment.variants.items()},
            "seeds": experiment.seeds,
            "searched": _searched(experiment),
            "scheduler": dataclasses.asdict(experiment.scheduler),
            "search": dataclasses.asdict(experiment.search),
            "num_samples": experiment.search.num_samples,
            "num_trials": experiment.num_trials(),
            "seeds_per_sample": experiment.seeds_per_sample,
            "max_iterations": iterations,
            "eval_every": representative_config(space, experiment).eval.every,
            "benchmark": experiment.benchmark,
            "num_classes": cfg.data.num_classes,
            "class_names": metric_class_names(cfg.data.num_classes),
            "confirm": {"from": experiment.confirm, "selected": confirmed} if experiment.confirm else None,
        },
    )


def run_experiment(space: Space, experiment: Experiment, study_dir: Path, sources: dict[int, str]) -> None:
    iterations = max_iterations(space, experiment)
    ray_path = layout.ray_dir(study_dir, experiment.name)
    confirmed = confirmed_configurations(study_dir, experiment)
    trainable = _trainable(space, experiment, study_dir, sources, confirmed)
    if tune.Tuner.can_restore(str(ray_path)):
        log(f"experiment {experiment.name!r}: resuming from {ray_path}")
        tuner = tune.Tuner.restore(str(ray_path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        _write_plan(space, experiment, study_dir, iterations, confirmed)
        log(f"experiment {experiment.name!r}: {experiment.num_trials()} trials of {iterations} iterations")
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(experiment),
            tune_config=tune.TuneConfig(
                metric=experiment.metric,
                mode=experiment.mode,
                scheduler=_scheduler(experiment, iterations),
                search_alg=_searcher(experiment, study_dir),
                num_samples=experiment.search.num_samples,
                trial_name_creator=_trial_name,
                reuse_actors=True,  # a fresh worker costs seconds of imports (torch, torchvision) per trial
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=ray_path.name,
                storage_path=str(ray_path.parent),
                verbose=0,
                callbacks=[StudyCallback(study_dir, experiment, experiment.num_trials(), iterations)],
                # PBT exploits a donor's checkpoint that may be older than the donor's last few: keep them
                # all.
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=None
                    if isinstance(experiment.scheduler, PbtScheduler)
                    else experiment.checkpoints_to_keep
                ),
                failure_config=tune.FailureConfig(max_failures=experiment.retries),
            ),
        )
    results = tuner.fit()
    errors = sum(result.error is not None for result in results)
    log(f"experiment {experiment.name!r} ended: {len(results)} trials, {errors} with errors")


def create_study(space: Space, *, name: str | None = None, storage: str | Path = "studies") -> Path:
    """Create the study directory of a loaded space, its paths expanded (`expand_paths`), refusing to
    overwrite an existing study."""
    study_dir = Path(storage).resolve() / layout.check_name(name or space.name, "--name")
    if (study_dir / layout.STUDY_FILE).exists():
        raise FileExistsError(
            f"{study_dir} already holds a study: continue it with `msl-study resume {study_dir}` "
            "or choose another --name"
        )
    study_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(space.path, study_dir / "space.given.yaml")
    original = yaml.safe_load(space.path.read_text())
    (study_dir / layout.SPACE_FILE).write_text(_resolved_space_yaml(space, original))
    layout.write_json(
        study_dir / layout.STUDY_FILE,
        {
            "name": space.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_revision": git_revision(),
            "versions": package_versions(),
            "experiments": [e.name for e in space.experiments],
        },
    )
    for experiment in space.experiments:
        for seed in experiment.seeds:
            save_config(
                space.source_config(experiment, seed),
                layout.experiment_dir(study_dir, experiment.name) / "configs" / f"source_seed{seed}.yaml",
            )
    return study_dir


def run_study_dir(study_dir: Path, address: str | None = None, space: Space | None = None) -> Path:
    """Run (or continue) every experiment of a study directory in order. `space`: the study's space as
    `create_study` was given it (`msl-study run` loads it once); None: read from the directory (a resume)."""
    space = space or expand_paths(load_space(study_dir / layout.SPACE_FILE))
    prepare_cluster(space, address)
    started = time.perf_counter()
    sources = ensure_sources(space, study_dir)
    for experiment in space.experiments:
        run_experiment(space, experiment, study_dir, sources[experiment.name])
    log(
        f"study {study_dir} done in {(time.perf_counter() - started) / 60:.1f} min; "
        f"report with: msl-study report {study_dir}"
    )
    return study_dir
