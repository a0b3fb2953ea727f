"""The study's driver: runs a study on Ray Tune, source models first, then each experiment's trials,
resumable after a crash.

This module is what runs in the driver process: the study directory (`create_study`, plan.json), each
experiment's Tune job (search space, searcher, scheduler, `StudyCallback`, which writes each ended trial's
status.json) and the order of the whole (`run_study_dir`). What runs in other processes has its own module:
a trial's worker `study.worker`, the source models `study.sources`, attaching to or starting the cluster
`study.cluster`. Everything a trial needs travels as small plain data (the resolved space and paths);
datasets and models are built inside the trial. The study directory layout is `study.layout`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from msl.config import save_config
from msl.objectives import is_better, is_oracle
from msl.run_dir import RunDir
from msl.runinfo import expand_path, git_revision, package_versions
from msl.trainer import NonFiniteLossError
from msl.words import count
from study import distributions, layout
from study.cluster import prepare_cluster
from study.decide import confirmed_configurations
from study.heartbeat import heartbeat, read_driver
from study.progress import eta_words, log
from study.schedulers import synchronous_scheduler
from study.sources import ensure_sources
from study.space import (
    SYNCHRONOUS,
    AshaScheduler,
    Experiment,
    PbtScheduler,
    Space,
    SpaceError,
    load_space,
    max_iterations,
    representative_config,
)
from study.worker import run_trial

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


def _non_finite(result: dict, metric: str) -> str | None:
    """What in a trial's last result is NaN or infinite (the objective or a loss term), if anything."""
    for name in (metric, *sorted(k for k in result if k.startswith("loss_"))):
        value = result.get(name)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            return f"{name} is {value} at iteration {int(result.get('iteration', 0))}"
    return None


class StudyCallback(tune.Callback):
    """On the driver: writes each ended trial's status.json and prints progress with an ETA at least every
    30 s. Counts come from the status files, so a resumed experiment counts the trials that ended before; the
    ETA is the remaining trial-iterations at the rate this driver has seen them done (the runs'
    progress.json). A resumed Tuner brings back its pickled callback: `setup` starts its clock again."""

    def __init__(self, study_dir: Path, experiment: Experiment, total_trials: int, iterations: int):
        self.study_dir, self.experiment = str(study_dir), experiment.name
        self.metric, self.mode, self.scheduler = experiment.metric, experiment.mode, experiment.scheduler.name
        self.total, self.iterations = total_trials, iterations
        self.runs_per_trial = experiment.seeds_per_sample
        self.best = math.nan
        self.setup()

    def __setstate__(self, state: dict) -> None:
        """A study resumed by a newer msl unpickles the callback an older one saved: fields added since then
        take their defaults."""
        self.__dict__.update({"runs_per_trial": 1, **state})

    def setup(self, *args, **info) -> None:
        self.started = time.time()
        self.work_at_start = self._work_done()
        self.last_print = 0.0

    def _trials(self) -> Path:
        return layout.trials_dir(Path(self.study_dir), self.experiment)

    def _work_done(self) -> int:
        """Trial-iterations done: all of an ended trial's (none are left), a running one's last progress."""
        ended = ended_trials(Path(self.study_dir), self.experiment)
        done = len(ended) * self.iterations * self.runs_per_trial
        for progress in self._trials().glob("*/*/progress.json"):
            if progress.parent.parent.name not in ended:
                done += (RunDir(progress.parent).read_progress() or {}).get("iteration", 0)
        return done

    def eta(self, now: float) -> str:
        """ ", ETA ~1.5 min" from the trial-iterations done since this driver started, or "" before any."""
        done, total = self._work_done(), self.total * self.iterations * self.runs_per_trial
        return eta_words(done - self.work_at_start, now - self.started, total - done)

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
        self._print(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if is_better(value := result.get(self.metric), self.best, self.mode):
            self.best = value
        self._print(force=False)

    def on_step_end(self, iteration, trials, **info):
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
        ended = ended_summary(Path(self.study_dir), self.experiment, self.total)
        log(
            f"{self.experiment}: {ended}, best {self.metric} so far {self.best:.4f}, "
            f"{(now - self.started) / 60:.1f} min{self.eta(now)}"
        )


def ended_trials(study_dir: Path, experiment: str) -> dict[str, str]:
    """Trial name -> status of every trial of `experiment` that has ended (written its status.json)."""
    paths = layout.trials_dir(study_dir, experiment).glob(f"*/{layout.STATUS_FILE}")
    return {path.parent.name: layout.read_json(path)["status"] for path in paths}


def ended_summary(study_dir: Path, experiment: str, total: int) -> str:
    """ "4/6 trials ended (3 finished, 1 stopped early, 0 errors, 0 diverged)"."""
    ended = list(ended_trials(study_dir, experiment).values())
    counts = {s: ended.count(s) for s in layout.TRIAL_STATUSES}
    return (
        f"{len(ended)}/{total} trials ended ({counts['finished']} finished, {counts['stopped']} stopped "
        f"early, {count(counts['error'], 'error')}, {counts['diverged']} diverged)"
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
    if isinstance(spec, SYNCHRONOUS):
        return synchronous_scheduler(spec, iterations, experiment.num_trials())
    if isinstance(spec, PbtScheduler):
        return tune.schedulers.PopulationBasedTraining(
            time_attr="iteration",
            perturbation_interval=spec.perturbation_interval,
            hyperparam_mutations={k: distributions.to_tune(v) for k, v in spec.mutations.items()},
            quantile_fraction=spec.quantile_fraction,
            synch=spec.synch,
        )
    return None


def _searcher(experiment: Experiment, study_dir: Path, horizon: int):
    """Draws the configurations from `search.seed`, at most `max_concurrent` trials at once. Grid and random
    search: Tune's variant generator. Optuna's TPE keeps its study in a journal file of the experiment (no
    server), trials stopped before `horizon` PRUNED (`study.optuna_record`): `optuna-dashboard` and
    `optuna.load_study(study_name=<experiment>, storage=JournalStorage(JournalFileBackend(path)))` read it."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if experiment.search.algorithm != "optuna":
        return BasicVariantGenerator(
            max_concurrent=experiment.max_concurrent or 0, random_state=experiment.search.seed
        )
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from study.optuna_record import OptunaRecord

    journal = layout.experiment_dir(study_dir, experiment.name) / layout.OPTUNA_JOURNAL
    storage = JournalStorage(JournalFileBackend(str(journal)))
    optuna = OptunaRecord(
        horizon=horizon, seed=experiment.search.seed, storage=storage, study_name=experiment.name
    )
    return ConcurrencyLimiter(optuna, experiment.max_concurrent) if experiment.max_concurrent else optuna


def _param_space(experiment: Experiment) -> dict[str, Any]:
    space: dict[str, Any] = {k: distributions.to_tune(v) for k, v in experiment.params.items()}
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
    layout.write_plan(
        study_dir,
        layout.Plan(
            experiment=experiment.name,
            metric=experiment.metric,
            mode=experiment.mode,
            oracle=experiment.oracle or is_oracle(experiment.choose_by or ""),  # either choice reads labels
            choose_by=experiment.choose_by,
            variants={name: variant.set for name, variant in experiment.variants.items()},
            seeds=experiment.seeds,
            searched=_searched(experiment),
            scheduler=dataclasses.asdict(experiment.scheduler),
            search=dataclasses.asdict(experiment.search),
            num_samples=experiment.search.num_samples,
            num_trials=experiment.num_trials(),
            seeds_per_sample=experiment.seeds_per_sample,
            max_iterations=iterations,
            eval_every=representative_config(space, experiment).eval.every,
            benchmark=experiment.benchmark,
            num_classes=cfg.data.num_classes,
            class_names=metric_class_names(cfg.data.num_classes),
            confirm=(
                {
                    "from": experiment.confirm,
                    "by": space.experiment(experiment.confirm).chooser,
                    "selected": confirmed,
                }
                if experiment.confirm
                else None
            ),
        ),
    )


# Tune copies these from the driver's environment into every trial actor's runtime environment, which Ray's
# runtime-env agent writes to its log file (ray.tune.execution.class_cache). Trials read local files and need
# none of them; the workers of a local Ray instance still inherit them, as any child process does.
_SECRETS_TUNE_SHIPS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECURITY_TOKEN",
    "AWS_SESSION_TOKEN",
)


@contextlib.contextmanager
def _secrets_not_shipped():
    """Hide `_SECRETS_TUNE_SHIPS` from Tune while it runs trials; the driver's environment is restored."""
    hidden = {name: os.environ.pop(name) for name in _SECRETS_TUNE_SHIPS if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)


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
                search_alg=_searcher(experiment, study_dir, iterations),
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
    with _secrets_not_shipped():
        tuner.fit()
    from study.tensorboard_hparams import write_hparams  # the report's code: not on the workers

    write_hparams(study_dir, experiment.name)
    ended = ended_summary(study_dir, experiment.name, experiment.num_trials())
    log(f"experiment {experiment.name!r} ended: {ended}")


def study_path(space: Space, name: str | None, storage: str | Path) -> Path:
    """Where `msl-study run` puts the study: `storage/name`, the name checked as a folder name."""
    return Path(storage).resolve() / layout.check_name(name or space.name, "--name")


def check_study_free(study_dir: Path) -> None:
    """FileExistsError if `study_dir` holds a study that a new run must not replace: one with an experiment
    started (its plan.json), or whose driver still runs. A study that stopped before its first trial (a source
    model that failed, a Ctrl-C) holds nothing to keep but source models, which stay (they are reused by key):
    running the corrected space file again takes its place."""
    if not (study_dir / layout.STUDY_FILE).exists():
        return
    listed = layout.read_json(study_dir / layout.STUDY_FILE).get("experiments", [])
    started = [name for name in listed if layout.plan_file(study_dir, name).is_file()]
    driver = read_driver(study_dir, time.time())
    if started or (driver is not None and driver.state == "running"):
        doing = f"ran experiment {started[0]!r}" if started else "is running now"
        raise FileExistsError(
            f"{study_dir} already holds a study that {doing}: continue it with `msl-study resume "
            f"{study_dir}` or choose another --name"
        )


def create_study(space: Space, *, name: str | None = None, storage: str | Path = "studies") -> Path:
    """Create the study directory of a loaded space, its paths expanded (`expand_paths`), refusing to
    overwrite a study that started (`check_study_free`)."""
    study_dir = study_path(space, name, storage)
    check_study_free(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(space.path, study_dir / layout.SPACE_GIVEN_FILE)
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
                layout.source_config_file(study_dir, experiment.name, seed),
            )
    return study_dir


def run_study_dir(study_dir: Path, address: str | None = None, space: Space | None = None) -> Path:
    """Run (or continue) every experiment of a study directory in order. `space`: the study's space as
    `create_study` was given it (`msl-study run` loads it once); None: read from the directory (a resume)."""
    space = space or expand_paths(load_space(study_dir / layout.SPACE_FILE))
    prepare_cluster(space, address)
    log(f"every trial's curves and the HParams table: tensorboard --logdir {study_dir}")
    started = time.perf_counter()
    with heartbeat(study_dir):
        sources = ensure_sources(space, study_dir)
        for experiment in space.experiments:
            run_experiment(space, experiment, study_dir, sources[experiment.name])
    log(
        f"study {study_dir} done in {(time.perf_counter() - started) / 60:.1f} min; "
        f"report with: msl-study report {study_dir}"
    )
    return study_dir
