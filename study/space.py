"""Search space files: a study described in YAML, checked completely before Ray starts.

    name: quickstart
    base: msl:synth                       # a packaged training config, or a config file relative to this one
    set: {optim.iterations: 300}          # fixed dotted overrides of the base config for the UDA trials
    source: {set: {optim.iterations: 600}}  # the source stage: one model per seed, shared by every UDA trial
    seeds: [0, 1, 2]                      # a grid dimension: every configuration runs once per seed
    variants: [source_only, maxsquare]    # named loss variants, or a mapping name -> dotted overrides, where
                                          #   `params: {key: {grid: [...]}}` searches a grid for that
                                          #   variant alone
    params: {loss.lambda_target: {loguniform: [0.01, 1.0]}}   # searched keys with Tune distributions
    search: {algorithm: random, num_samples: 4, seed: 0}     # grid | random | optuna (TPE)
    scheduler: {name: fifo}               # fifo | asha | hyperband | successive_halving | pbt, each with its
                                          #   own settings (the classes below)
    metric: target_im                     # any metric the trainer reports; oracle_* needs allow_oracle: true
    choose_by: ensemble_agreement         # optional: what picks each variant's configuration (else metric)
    resources: {cpu: 1, gpu: 0}           # per trial; fractional GPUs pack several trials on one GPU
    max_concurrent: 2
    experiments:                          # optional, run in order; each may override any `Experiment` key
      tune: {}
      confirm:                            # each variant with the configuration that `tune` selected with its
        confirm: {from: tune}             #   own objective, on seeds that `tune` never used; it searches
        seeds: [3, 4]                     #   nothing itself
        params: {}
        search: {algorithm: grid, num_samples: 1}

Each key's type and default is a field of the dataclasses below (`Experiment`, `Search`, `AshaScheduler`,
...), read by `msl.config.build` like the training config: an unknown key or a wrong value fails with its
dotted path, where the file writes it (`set.optim.iteratons` for a typo in the top-level `set`,
`experiments.NAME.set...`, `variants.NAME...`, `source.set...`).
`msl-study run SPACE --dry-run` prints every experiment's effective settings, defaults filled in.

Tune, then confirm: an experiment with `confirm: {from: NAME}` takes, per variant, the configuration that the
earlier experiment NAME selected with its own (label-free) objective, or with its `choose_by` validator, the
best mean over NAME's seeds, and runs it on its own `seeds`, which must be seeds NAME never used. Its
variants that NAME did not search (e.g. `source_only`) run with their fixed settings. It searches nothing
itself.

The source stage takes the base config, the `data.*`, `model.*` and `runtime.*` keys of an experiment's `set`
(what its trials must share with it), then `source.set`: a trial's learning rate or loss weight never changes
the source model it starts from.

Every experiment's every trial configuration (and every source configuration) goes through
`msl.config.load_config` and `check_data_roots`, at every combination of the searched keys' bounding values
(each value of a grid or a choice, both ends of a range), so that a typo, an out-of-range value, a rule
between two keys or a missing data root fails here with the keys that hold it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from msl.config import (
    ConfigError,
    TrainConfig,
    build,
    check_data_roots,
    check_known_keys,
    config_to_dict,
    load_config,
    read_yaml,
    spec,
)
from msl.objectives import LABEL_FREE_METRICS, LABEL_FREE_MODES, METRIC_MODES, MODES, is_oracle, metric_mode
from msl.words import count
from study import distributions
from study.layout import is_safe_name

# Built-in loss variants (paper names); a space file may override or add to them.
VARIANTS: dict[str, dict[str, Any]] = {
    "source_only": {"loss.target": "none", "model.multi_level": False},  # sees no target data at all
    # target data only through batch norm (AdaBN)
    "adabn": {"loss.target": "none", "model.multi_level": False, "loss.adabn": True},
    "entropy": {"loss.target": "entropy", "model.multi_level": False},
    "iw_entropy": {"loss.target": "iw_entropy", "model.multi_level": False},
    "maxsquare": {"loss.target": "maxsquare", "model.multi_level": False},
    "iw_maxsquare": {"loss.target": "iw_maxsquare", "model.multi_level": False},
    "iw_maxsquare_multi": {"loss.target": "iw_maxsquare", "model.multi_level": True},
    "hard": {"loss.target": "hard", "model.multi_level": False},
}
# Prefixes of `set` keys that the source stage also takes.
SHARED_WITH_SOURCE = ("data.", "model.", "runtime.")


class SpaceError(ConfigError):
    """A search space file that cannot run; the message names the key."""


def source_key(cfg: TrainConfig) -> str:
    """Identifies a source model by everything that shapes its weights and its best checkpoint, e.g.
    `seed0-3fa2c1d9`: not how it is run, and not the target data, which a source run only evaluates on (so
    experiments on different target cities share their source models)."""
    resolved = config_to_dict(cfg)
    resolved.pop("runtime")
    resolved["data"] = {k: v for k, v in resolved["data"].items() if not k.startswith("target")}
    del resolved["data"]["cache_mb"], resolved["eval"]["snd_pixels"]  # shape neither weights nor the pick
    resolved["seed"] = cfg.runtime.seed
    if not resolved["loss"]["options"]:  # the keys of studies made before loss.options existed stay valid
        del resolved["loss"]["options"]
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]
    return f"seed{cfg.runtime.seed}-{digest}"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SpaceError(message)


def _require_name(name: Any, path: str) -> None:
    """Names become folders of the study directory: refuse any that could leave it (`..`, `/`)."""
    _require(
        is_safe_name(name),
        f"{path}: {name!r} is not allowed as a name; use letters, digits, '_', '-' and "
        "'.', starting with a letter or a digit",
    )


def check_distribution(dist: Any, path: str) -> list[Any]:
    """Validate one distribution spec (`study.distributions.check`); return the values that bound it."""
    return distributions.check(dist, path, SpaceError)


def _overrides(value: Any, path: str) -> dict[str, Any]:
    _require(isinstance(value, dict), f"{path}: expected a mapping of dotted keys to values, got {value!r}")
    return dict(value)


# ------------------------------------------------------------------------------------------------------------
# The typed space: what each key holds and its default, checked by msl.config's machinery (`build`)


@dataclass
class Variant:
    """A loss variant: its fixed dotted overrides, and the grids it searches alone (`params`)."""

    set: dict[str, Any]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


def _variants(value: Any, path: str) -> dict[str, Variant]:
    """`[name, ...]` of built-in variants, or a mapping name -> {dotted key: value, params: {key: {grid}}}."""
    if isinstance(value, list):
        for name in value:
            _require(
                name in VARIANTS,
                f"{path}: unknown variant {name!r}; built-in variants are "
                f"{', '.join(VARIANTS)} (or give a mapping name -> overrides)",
            )
        return {name: Variant(dict(VARIANTS[name])) for name in value}
    _require(isinstance(value, dict) and value, f"{path}: expected a list of variant names or a mapping")
    variants = {}
    for name, extra in value.items():
        _require_name(name, f"{path}.{name}")
        extra = _overrides(extra or {}, f"{path}.{name}")
        own = _overrides(extra.pop("params", {}), f"{path}.{name}.params")
        for key, grid in own.items():
            _require(
                isinstance(grid, dict) and list(grid) == ["grid"],
                f"{path}.{name}.params.{key}: a variant's own params are grids, e.g. {{grid: [0.1, 1.0]}}; "
                f"got {grid!r}",
            )
        variants[name] = Variant({**VARIANTS.get(name, {}), **extra}, own)
    return variants


@dataclass
class Search:
    """How configurations are drawn from `params`: every grid point times `num_samples` draws of the rest."""

    algorithm: str = spec("grid", choices=("grid", "random", "optuna"))  # optuna: TPE, one variant and seed
    num_samples: int = spec(1, ge=1)
    seed: int = 0  # the searcher's (random and optuna): the same seed draws the same configurations


@dataclass
class FifoScheduler:
    """Every trial runs all its iterations."""

    name: str = "fifo"


@dataclass
class AshaScheduler:
    """Asynchronous successive halving: at each rung (grace_period x reduction_factor^k iterations) a trial
    below the best 1/reduction_factor of those that reached the rung stops."""

    name: str = "asha"
    grace_period: int = spec(1, ge=1)
    reduction_factor: float = spec(4.0, gt=1)
    max_iterations: int | None = spec(None, ge=1)  # the horizon; None: a trial's optim.iterations


@dataclass
class HyperBandScheduler:
    """Synchronous HyperBand (Ray Tune's HyperBandScheduler): brackets of trials, each halved at ASHA's rungs
    (grace_period x reduction_factor^k iterations) once every trial of the bracket has reached the rung; the
    rest wait, paused, and continue from their checkpoints. The most aggressive bracket (first rung at
    grace_period) fills first, the next starts one rung later, and so on."""

    name: str = "hyperband"
    grace_period: int = spec(1, ge=1)
    reduction_factor: float = spec(3.0, gt=1)
    max_iterations: int | None = spec(None, ge=1)  # the horizon; None: a trial's optim.iterations


@dataclass
class SuccessiveHalvingScheduler:
    """Synchronous successive halving, HyperBand's one-bracket case: every trial of the experiment runs to
    grace_period; at each rung the best 1/reduction_factor of them go on, the others stop."""

    name: str = "successive_halving"
    grace_period: int = spec(1, ge=1)
    reduction_factor: float = spec(3.0, gt=1)
    max_iterations: int | None = spec(None, ge=1)  # the horizon; None: a trial's optim.iterations


@dataclass
class PbtScheduler:
    """Population-based training: every `perturbation_interval` iterations a trial in the bottom
    `quantile_fraction` takes over the checkpoint of one in the top and perturbs the `mutations` keys."""

    name: str = "pbt"
    perturbation_interval: int | None = spec(None, ge=1)  # required
    mutations: dict[str, Any] = field(default_factory=dict)  # required: dotted key -> distribution
    quantile_fraction: float = spec(0.25, ge=0, le=0.5)
    synch: bool = False  # all trials wait at each perturbation


SCHEDULERS = {
    "fifo": FifoScheduler,
    "asha": AshaScheduler,
    "hyperband": HyperBandScheduler,
    "successive_halving": SuccessiveHalvingScheduler,
    "pbt": PbtScheduler,
}
Scheduler = FifoScheduler | AshaScheduler | HyperBandScheduler | SuccessiveHalvingScheduler | PbtScheduler
SYNCHRONOUS = (HyperBandScheduler, SuccessiveHalvingScheduler)  # trials wait, paused, at each rung


def _scheduler(value: Any, path: str) -> Scheduler:
    _require(
        isinstance(value, dict) and value.get("name") in SCHEDULERS,
        f"{path}.name: expected one of {', '.join(SCHEDULERS)}, got {value!r}",
    )
    scheduler = build(SCHEDULERS[value["name"]], value, f"{path}.")
    _require(
        not isinstance(scheduler, PbtScheduler)
        or bool(scheduler.perturbation_interval and scheduler.mutations),
        f"{path}: pbt needs perturbation_interval and mutations (dotted key -> distribution)",
    )
    return scheduler


@dataclass
class Resources:
    """What one trial holds on one node (source models ask for the same, or a share of the CPUs when there is
    no GPU: `study.sources.source_cpus`)."""

    cpu: float = spec(1.0, gt=0)
    gpu: float = spec(0.0, ge=0)  # a fraction of one GPU (e.g. 0.25) packs trials on it, else whole GPUs


def _confirm(value: Any, path: str) -> str:
    """`{from: NAME}`: the name of the earlier experiment (checked against it in `load_space`)."""
    confirm = _overrides(value, path)
    check_known_keys(confirm, ("from",), f"{path}.", SpaceError)
    _require(isinstance(confirm.get("from"), str), f"{path}.from: expected the name of an earlier experiment")
    return confirm["from"]


@dataclass
class Experiment:
    """One experiment: every key it may set, with its default. A space's top-level keys are settings that all
    its experiments share; an experiment's own keys replace them."""

    name: str = "main"  # its key under `experiments` (given by the space, not a setting)
    set: dict[str, Any] = field(default_factory=dict)  # fixed dotted overrides of the base config
    seeds: list[int] = spec([0], ge=0)  # a grid dimension: every configuration runs once per seed
    # > 1: each configuration drawn runs on all `seeds` (this many) inside one trial; the searcher and the
    # scheduler see the mean over seeds (ASHA's rungs, Optuna's objective)
    seeds_per_sample: int = spec(1, ge=1)
    variants: dict[str, Variant] = spec({"maxsquare": Variant(VARIANTS["maxsquare"])}, parse=_variants)
    params: dict[str, Any] = field(default_factory=dict)  # searched dotted key -> {distribution: arguments}
    search: Search = field(default_factory=Search)
    scheduler: Scheduler = spec(FifoScheduler(), parse=_scheduler)
    metric: str = "source_val_miou"  # any metric the trainer reports (METRIC_MODES)
    mode: str | None = spec(None, choices=MODES)  # None: the metric's own direction
    allow_oracle: bool = False  # needed for an oracle_* metric, which reads the target test labels
    # the validator that picks each variant's configuration, scored at the checkpoints `metric` selects
    # (None: `metric` itself): any label-free metric, or a study-level one (ensemble_agreement,
    # seed_disagreement) that study.selection computes from the saved softmax maps once the experiment ends
    choose_by: str | None = None
    benchmark: str | None = None  # a key of study/paper_results.yaml: the paper's numbers in the report
    resources: Resources = field(default_factory=Resources)  # per trial
    max_concurrent: int | None = spec(None, ge=1)  # None: as many as the resources allow
    checkpoints_to_keep: int = spec(2, ge=1)
    retries: int = spec(1, ge=0)  # per trial and per source model
    confirm: str | None = spec(None, parse=_confirm)  # `{from: NAME}`: confirms what NAME selected

    def __post_init__(self) -> None:
        self.mode = metric_mode(self.metric, self.mode)

    @property
    def oracle(self) -> bool:
        return is_oracle(self.metric)

    @property
    def chooser(self) -> str:
        """What picks each variant's configuration: `choose_by`, else the objective."""
        return self.choose_by or self.metric

    @property
    def variant_params(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Variant -> the grids it searches alone, for the variants that have some."""
        return {name: variant.params for name, variant in self.variants.items() if variant.params}

    def trial_overrides(self, variant: str, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's dotted overrides of the base config, later ones winning: the experiment's `set`, the
        variant's, then the trial's searched values."""
        return {**self.set, **self.variants[variant].set, **params}

    def searched_params(self, variant: str) -> dict[str, dict[str, Any]]:
        """Everything searched for one variant: the shared params and the variant's own grids."""
        return {**self.params, **self.variants[variant].params}

    def grid_size(self, variant: str | None = None) -> int:
        """Grid points of the shared params, times those of `variant`'s own params when one is named."""
        own = self.variants[variant].params.values() if variant else ()
        return math.prod(len(dist["grid"]) for dist in [*self.params.values(), *own] if "grid" in dist)

    def num_trials(self) -> int:
        """Tune trials: grid points x samples, times the seeds unless one trial runs them all."""
        points = sum(self.grid_size(variant) for variant in self.variants)
        seeds = 1 if self.seeds_per_sample > 1 else len(self.seeds)
        return points * seeds * self.search.num_samples


EXPERIMENT_KEYS = tuple(f.name for f in dataclasses.fields(Experiment) if f.name != "name")
TOP_KEYS = ("name", "base", "config", "source", "experiments", *EXPERIMENT_KEYS)


@dataclass
class Space:
    name: str
    path: Path
    base: dict[str, Any]  # base training config as a nested mapping
    source_overrides: dict[str, Any]
    source_checkpoint: str | None
    experiments: list[Experiment] = field(default_factory=list)

    def experiment(self, name: str) -> Experiment:
        return next(experiment for experiment in self.experiments if experiment.name == name)

    def trial_config(
        self,
        experiment: Experiment,
        variant: str,
        seed: int,
        params: dict[str, Any],
        source_checkpoint: str | None = None,
    ) -> TrainConfig:
        """The checked config of one UDA trial."""
        overrides = {**experiment.trial_overrides(variant, params), "stage": "uda", "runtime.seed": seed}
        if source_checkpoint is not None:
            overrides["model.weights"] = source_checkpoint
        return load_config(self.base, overrides)

    def source_config(self, experiment: Experiment, seed: int) -> TrainConfig:
        """The checked config of the source model of a seed: the base config, the experiment's fixed
        overrides of what the trials must share with it (`SHARED_WITH_SOURCE`: the data, the network, how it
        runs; not the trials' optimiser, loss or evaluation settings), then the source stage's own
        `source.set`. The aux head is trained so that multi-level variants share the model, and the best
        checkpoint is chosen on source val, as the reference does: no target label, no target validator."""
        shared = {key: value for key, value in experiment.set.items() if key.startswith(SHARED_WITH_SOURCE)}
        overrides = {
            "model.multi_level": True,
            **shared,
            **self.source_overrides,
            "stage": "source",
            "runtime.seed": seed,
            "selection.metric": "source_val_miou",
            "selection.mode": None,
        }
        return load_config(self.base, overrides)


def _experiment(name: str, raw: dict[str, Any], prefix: str) -> Experiment:
    experiment = build(Experiment, raw, prefix, name=name)
    _check_experiment(experiment, prefix)
    return experiment


def _check_experiment(e: Experiment, prefix: str) -> None:
    """The rules that tie an experiment's settings together (`build` has checked each setting alone)."""
    _require(
        e.seeds and len(set(e.seeds)) == len(e.seeds),
        f"{prefix}seeds: expected a list of distinct integers >= 0, got {e.seeds!r}",
    )
    shared = set(e.params) & {key for own in e.variant_params.values() for key in own}
    _require(
        not shared,
        f"{prefix}variants: {sorted(shared)} searched both in params and in a variant's own params",
    )
    _require(
        not e.variant_params or e.search.algorithm == "grid",
        f"{prefix}variants: a variant's own params are grids; they need search.algorithm grid",
    )
    _check_seeds_per_sample(e, prefix)
    if e.search.algorithm == "optuna":
        _require(
            len(e.variants) == 1 and (len(e.seeds) == 1 or e.seeds_per_sample > 1),
            f"{prefix}search.algorithm: optuna (TPE) explores the params of one variant; got "
            f"{len(e.variants)} variants and {len(e.seeds)} seeds (give each configuration all the seeds "
            f"with seeds_per_sample: {len(e.seeds)}, or repeat the chosen configuration over seeds in a grid "
            "experiment)",
        )
        _require(
            not any("grid" in dist for dist in e.params.values() if isinstance(dist, dict)),
            f"{prefix}params: optuna cannot search a grid distribution; use choice",
        )
    _require(
        e.metric not in LABEL_FREE_MODES or e.metric in METRIC_MODES,
        f"{prefix}metric: {e.metric!r} is computed from the saved softmax maps after an experiment ends, so "
        "it cannot steer a search or pick checkpoints during one; use it as `choose_by` to pick each "
        "variant's configuration",
    )
    _require(
        e.metric in METRIC_MODES,
        f"{prefix}metric: {e.metric!r} is not a metric the trainer reports; choose one "
        f"of {', '.join(METRIC_MODES)}",
    )
    _require(
        e.choose_by is None or e.choose_by in LABEL_FREE_MODES or e.choose_by in METRIC_MODES,
        f"{prefix}choose_by: {e.choose_by!r} is not a validator; choose one of {', '.join(LABEL_FREE_MODES)}",
    )
    _require(
        e.choose_by is None or not is_oracle(e.choose_by) or e.allow_oracle,
        f"{prefix}choose_by: {e.choose_by!r} reads the target test labels; choosing on it is an oracle "
        "result. Set allow_oracle: true to ask for it by name, or use a label-free validator",
    )
    _require(
        not e.oracle or e.allow_oracle,
        f"{prefix}metric: {e.metric!r} reads the target test labels; selecting on it is an oracle result. "
        f"Set allow_oracle: true to ask for it by name, or use a label-free metric "
        f"({', '.join(LABEL_FREE_METRICS)})",
    )
    _require(
        e.resources.gpu <= 1 or e.resources.gpu % 1 == 0,
        f"{prefix}resources.gpu: expected 0, a fraction of one GPU (e.g. 0.25) or a whole number, "
        f"got {e.resources.gpu!r}",
    )
    _require(
        e.confirm is None
        or not e.params
        and not e.variant_params
        and e.search.algorithm == "grid"
        and e.search.num_samples == 1,
        f"{prefix}confirm: a confirmation searches nothing itself (no params, no search); it runs the "
        f"configurations that experiment {e.confirm!r} selected",
    )


def _check_seeds_per_sample(e: Experiment, prefix: str) -> None:
    if e.seeds_per_sample == 1:
        return
    _require(
        len(e.seeds) == e.seeds_per_sample,
        f"{prefix}seeds_per_sample: {e.seeds_per_sample} runs every configuration on that many seeds; list "
        f"them in seeds (got {e.seeds!r}), e.g. seeds: {list(range(e.seeds_per_sample))}",
    )
    _require(
        not isinstance(e.scheduler, PbtScheduler) and e.confirm is None,
        f"{prefix}seeds_per_sample: not with the pbt scheduler or a confirmation (they run one seed per "
        "trial)",
    )


def _resolve_base(raw: dict[str, Any], space_path: Path) -> dict[str, Any]:
    base = raw.get("base")
    config: dict[str, Any] = {}
    if base is not None:
        _require(isinstance(base, str), f"base: expected a path or msl:<name>, got {base!r}")
        if base.startswith("msl:"):
            packaged = resources.files("msl") / "configs" / f"{base.removeprefix('msl:')}.yaml"
            _require(packaged.is_file(), f"base: no packaged config {base!r}")
            config = read_yaml(Path(str(packaged)))
        else:
            path = (space_path.parent / base).resolve()
            _require(path.is_file(), f"base: {path} does not exist")
            config = read_yaml(path)
    inline = raw.get("config", {})
    _require(isinstance(inline, dict), "config: expected a mapping (nested training config)")
    return _merge(config, inline)


def _merge(base: dict, extra: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else copy.deepcopy(value)
        )
    return merged


def load_space(path: str | Path) -> Space:
    """Parse and fully validate a space file (see the module docstring)."""
    path = Path(path)
    try:
        return _load_space(path)
    except SpaceError:
        raise
    except ConfigError as error:  # a setting of the space itself (msl.config.build), named by its key
        raise SpaceError(str(error)) from None


def _load_space(path: Path) -> Space:
    raw = read_yaml(path)
    check_known_keys(raw, TOP_KEYS, "", SpaceError)
    source = _overrides(raw.get("source", {}), "source")
    check_known_keys(source, ("set", "checkpoint"), "source.", SpaceError)
    shared = {k: v for k, v in raw.items() if k in EXPERIMENT_KEYS}
    named = raw.get("experiments") or {"main": {}}
    _require(isinstance(named, dict), "experiments: expected a mapping of experiment name -> settings")
    _require_name(raw.get("name", path.stem), "name")
    space = Space(
        raw.get("name", path.stem),
        path,
        _resolve_base(raw, path),
        _overrides(source.get("set", {}), "source.set"),
        source.get("checkpoint"),
    )
    written: dict[str, dict[str, str]] = {}  # experiment -> "set"/"variants" -> where the file gives it
    for name, own in named.items():
        _require_name(name, f"experiments.{name}")
        _require(isinstance(own, dict) or own is None, f"experiments.{name}: expected a mapping")
        merged = {**shared, **(own or {})}
        prefix = f"experiments.{name}." if "experiments" in raw else ""
        space.experiments.append(_experiment(str(name), merged, prefix))
        _check_confirm(space, prefix)
        written[str(name)] = {
            key: f"{prefix if key in (own or {}) else ''}{key}" for key in ("set", "variants")
        }
    _check_configs(space, written)
    return space


def _check_confirm(space: Space, prefix: str) -> None:
    """A confirmation names an earlier experiment and runs on seeds that experiment never used."""
    experiment = space.experiments[-1]
    if experiment.confirm is None:
        return
    earlier = {e.name: e for e in space.experiments[:-1]}
    _require(
        experiment.confirm in earlier,
        f"{prefix}confirm.from: {experiment.confirm!r} is not an earlier experiment; choose one of "
        f"{', '.join(earlier) or '(none: list the tuning experiment first)'}",
    )
    reused = sorted(set(experiment.seeds) & set(earlier[experiment.confirm].seeds))
    _require(
        not reused,
        f"{prefix}seeds: {reused} also ran in {experiment.confirm!r}; a confirmation runs on "
        "fresh seeds, so that the selection cannot have fitted their noise",
    )


def confirmed_params(space: Space, experiment: Experiment, variant: str) -> dict[str, dict[str, Any]]:
    """What the experiment a confirmation takes its configurations from searched for `variant` (else
    empty)."""
    tuned = next((e for e in space.experiments if e.name == experiment.confirm), None)
    return tuned.searched_params(variant) if tuned and variant in tuned.variants else {}


def _written_at(space: Space, error: ConfigError, places: dict[str, dict[str, Any]]) -> str | None:
    """The first of `places` (where a space file writes overrides -> those overrides) whose overrides alone
    give `error`: where the user wrote the key that is wrong, e.g. `set.optim.iteratons`."""
    for place, overrides in places.items():
        try:
            load_config(space.base, {**overrides, "stage": "uda"})
        except ConfigError as alone:
            if str(alone) == str(error):
                return f"{place}.{error}"
    return None


def _check_configs(space: Space, written: dict[str, dict[str, str]]) -> None:
    """Build every source config and every trial config that the study could train (`_check_trials`), each
    with the data roots its run reads (`check_data_roots`). An error names the `set` that holds the wrong key
    (`_written_at`), else the experiment's part that builds the config."""
    for experiment in space.experiments:
        prefix = f"experiments.{experiment.name}." if len(space.experiments) > 1 else ""
        own_set = {written[experiment.name]["set"]: experiment.set}
        for seed in experiment.seeds:
            _check_runnable(
                partial(space.source_config, experiment, seed),
                f"{prefix}source",
                space,
                {**own_set, "source.set": space.source_overrides},
            )
        mutations = _pbt_mutations(experiment, prefix)
        for variant, settings in experiment.variants.items():
            places = {**own_set, f"{written[experiment.name]['variants']}.{variant}": settings.set}
            _check_trials(space, experiment, variant, mutations, prefix, places)
        _check_scheduler_fits(experiment, representative_config(space, experiment).optim.iterations, prefix)
        _check_synchronous(experiment, representative_config(space, experiment), prefix)


def _check_runnable(
    config: Callable[[], TrainConfig], where: str, space: Space, places: dict[str, dict[str, Any]]
) -> None:
    """Build a config (`load_config`'s checks) and check the data roots its run reads; a SpaceError names
    the `set` of `places` that holds the wrong key (`_written_at`), else `where` (the source, a variant or the
    searched values), before the config's own key."""
    try:
        check_data_roots(config())
    except ConfigError as error:
        raise SpaceError(_written_at(space, error, places) or f"{where}: {error}") from None


def _check_trials(
    space: Space,
    experiment: Experiment,
    variant: str,
    mutations: dict[str, list[Any]],
    prefix: str,
    places: dict[str, dict[str, Any]],
) -> None:
    """A variant's trial config at every combination of its searched keys' bounding values (each value of a
    grid or a choice, both ends of a range), so that a rule between two searched keys fails here too."""
    extremes = {
        key: check_distribution(dist, f"{prefix}params.{key}")
        for key, dist in experiment.searched_params(variant).items()
    }
    for key, values in mutations.items():
        extremes.setdefault(key, values)
    # a confirmation runs the values that the earlier experiment searched
    for key, dist in confirmed_params(space, experiment, variant).items():
        extremes[key] = check_distribution(dist, key)
    for values in itertools.product(*extremes.values()):
        params = dict(zip(extremes, values, strict=True))
        where = ", ".join(f"params.{key}={value!r}" for key, value in params.items())
        _check_runnable(
            partial(space.trial_config, experiment, variant, experiment.seeds[0], params),
            prefix + (where or f"variants.{variant}"),
            space,
            places,
        )


def _check_scheduler_fits(experiment: Experiment, iterations: int, prefix: str) -> None:
    """The scheduler's horizon, grace period and perturbation interval within a trial's `optim.iterations`."""
    horizon = getattr(experiment.scheduler, "max_iterations", None) or iterations
    _require(
        horizon <= iterations,
        f"{prefix}scheduler.max_iterations: {horizon} is more than the "
        f"{iterations} iterations a trial runs (optim.iterations)",
    )
    for key in ("grace_period", "perturbation_interval"):
        value = getattr(experiment.scheduler, key, None)
        _require(
            value is None or value <= horizon,
            f"{prefix}scheduler.{key}: {value} is more than the {horizon} iterations a trial runs",
        )


def rungs(
    scheduler: AshaScheduler | HyperBandScheduler | SuccessiveHalvingScheduler, horizon: int
) -> list[int]:
    """The iterations below the horizon at which the scheduler compares trials: grace_period x
    reduction_factor^k (as Ray's HyperBand brackets and ASHA place them, for a whole reduction factor)."""
    found, rung = [], scheduler.grace_period
    while rung < horizon:
        found.append(int(rung))
        rung *= scheduler.reduction_factor
    return found


def bracket_sizes(
    scheduler: HyperBandScheduler | SuccessiveHalvingScheduler, horizon: int, trials: int
) -> list[int]:
    """Trials per bracket, the bracket with the most halvings first: HyperBand's ceil((s_max + 1) / (s + 1)
    x eta^s) for s halvings (Li et al. 2018, as Ray sizes them); successive halving: one bracket of every
    trial."""
    halvings = len(rungs(scheduler, horizon))
    if isinstance(scheduler, SuccessiveHalvingScheduler):
        return [trials]
    eta = scheduler.reduction_factor
    return [math.ceil((halvings + 1) / (s + 1) * eta**s) for s in range(halvings, -1, -1)]


def _check_synchronous(experiment: Experiment, cfg: TrainConfig, prefix: str) -> None:
    """A synchronous scheduler pauses trials at its rungs, which must be evaluation iterations (a trial
    reports only there), and compares every trial of a bracket, which must all have started."""
    from msl.trainer import evaluates_at

    scheduler = experiment.scheduler
    if not isinstance(scheduler, SYNCHRONOUS):
        return
    _require(
        scheduler.reduction_factor % 1 == 0,
        f"{prefix}scheduler.reduction_factor: {scheduler.name} needs a whole number, got "
        f"{scheduler.reduction_factor}",
    )
    horizon = scheduler.max_iterations or cfg.optim.iterations
    for rung in rungs(scheduler, horizon):
        _require(
            evaluates_at(rung, cfg),
            f"{prefix}scheduler.grace_period: the rung at iteration {rung} is not an evaluation iteration "
            f"(eval.every {cfg.eval.every}); choose grace_period and reduction_factor so that every rung "
            f"(grace_period x reduction_factor^k) is a multiple of eval.every",
        )
    largest = max(bracket_sizes(scheduler, horizon, experiment.num_trials()))
    _require(
        experiment.max_concurrent is None or experiment.max_concurrent >= largest,
        f"{prefix}max_concurrent: {scheduler.name} compares the {largest} trials of a bracket at each rung, "
        f"so they must all start; max_concurrent {experiment.max_concurrent} is fewer. Remove it: "
        "`resources` limits how many trials run at once, and a trial waiting at a rung holds none",
    )


def _pbt_mutations(experiment: Experiment, prefix: str) -> dict[str, list[Any]]:
    mutations = getattr(experiment.scheduler, "mutations", {})
    return {
        key: check_distribution(dist, f"{prefix}scheduler.mutations.{key}") for key, dist in mutations.items()
    }


def representative_config(space: Space, experiment: Experiment) -> TrainConfig:
    """A trial config of the experiment (first variant and seed, each searched key at its lower bound), for
    the settings that do not vary between trials, such as iterations and the evaluation interval."""
    params = {key: check_distribution(dist, key)[0] for key, dist in experiment.params.items()}
    return space.trial_config(experiment, next(iter(experiment.variants)), experiment.seeds[0], params)


def max_iterations(space: Space, experiment: Experiment) -> int:
    """Iterations of a full trial (the ASHA horizon unless the scheduler names one)."""
    return (
        getattr(experiment.scheduler, "max_iterations", None)
        or representative_config(space, experiment).optim.iterations
    )


def _searched_words(experiment: Experiment) -> str:
    parts = [", ".join(f"{k} {v}" for k, v in experiment.params.items())] if experiment.params else []
    parts += [
        f"{variant}: " + ", ".join(f"{k} {v}" for k, v in own.items())
        for variant, own in experiment.variant_params.items()
    ]
    if experiment.confirm:
        parts.append(
            f"nothing itself; confirms the configurations that {experiment.confirm!r} selects, on fresh seeds"
        )
    return "; ".join(parts) or "nothing"


def _inline(settings: dict[str, Any]) -> str:
    """Settings as one line of YAML, e.g. `{name: asha, grace_period: 1, reduction_factor: 4.0}`."""
    return yaml.safe_dump(settings, default_flow_style=True, sort_keys=False, width=1000).strip()


def describe_plan(space: Space) -> str:
    """The `--dry-run` summary: trials, what each varies, the compute budget in iterations, and the effective
    search, scheduler and resources with every default filled in."""
    lines = [f"study {space.name!r} from {space.path}"]
    source_total = 0
    sources = set()
    for experiment in space.experiments:
        for seed in experiment.seeds:
            cfg = space.source_config(experiment, seed)
            if source_key(cfg) not in sources:
                sources.add(source_key(cfg))
                source_total += cfg.optim.iterations
    lines.append(
        f"  source models: {len(sources)} (one per seed and source config), {source_total} iterations"
        + (f"; using {space.source_checkpoint} instead" if space.source_checkpoint else "")
    )
    for experiment in space.experiments:
        iterations = max_iterations(space, experiment)
        trials = experiment.num_trials()
        objective = f"{experiment.mode} {experiment.metric}" + (
            " (ORACLE: target test labels)" if experiment.oracle else " (label-free)"
        )
        if experiment.choose_by:
            chooser = experiment.choose_by + (" (ORACLE)" if is_oracle(experiment.choose_by) else "")
            objective += f"; each variant's configuration chosen by {chooser}"
        per_trial = experiment.seeds_per_sample
        seeds = count(len(experiment.seeds), "seed") if per_trial == 1 else "1 trial of all seeds"
        samples = count(experiment.search.num_samples, "sample")
        variants = count(len(experiment.variants), "variant")
        product = (
            f"{variants} x {seeds} x {count(experiment.grid_size(), 'grid point')} x {samples}"
            if not experiment.variant_params
            else f"({' + '.join(str(experiment.grid_size(v)) for v in experiment.variants)} grid points "
            f"of the {variants}) x {seeds} x {samples}"
        )
        scheduler = dataclasses.asdict(experiment.scheduler)
        if "max_iterations" in scheduler:
            scheduler["max_iterations"] = iterations
        lines += [
            f"  experiment {experiment.name!r}: {count(trials, 'trial')} = {product}",
            f"    variants: {', '.join(experiment.variants)}; seeds: {experiment.seeds}",
            "    searched: " + _searched_words(experiment),
            f"    objective: {objective}",
            f"    search: {_inline(dataclasses.asdict(experiment.search))}",
            f"    scheduler: {_inline(scheduler)}",
            f"    resources per trial: {_inline(dataclasses.asdict(experiment.resources))}; "
            + _inline(
                {
                    key: getattr(experiment, key)
                    for key in ("max_concurrent", "retries", "checkpoints_to_keep")
                }
            ).strip("{}"),
            f"    budget: at most {trials * iterations * per_trial} trial-iterations ({iterations} per trial"
            + (f" and seed, {per_trial} seeds per trial)" if per_trial > 1 else ")"),
        ]
    return "\n".join(lines)
