"""Search space files: a study described in YAML, checked completely before Ray starts.

    name: quickstart
    base: ../msl/configs/synth.yaml       # a training config file (relative to this file), or `msl:synth`
    set: {optim.iterations: 300}          # fixed dotted overrides of the base config for the UDA trials
    source: {set: {optim.iterations: 600}}  # the source stage: one model per seed, shared by every UDA trial
    seeds: [0, 1, 2]                      # a grid dimension: every configuration runs once per seed
    variants: [source_only, maxsquare]    # named loss variants, or a mapping name -> dotted overrides, where
                                          #   `params: {key: {grid: [...]}}` searches a grid for that variant alone
    params: {loss.lambda_target: {loguniform: [0.01, 1.0]}}   # searched keys with Tune distributions
    search: {algorithm: grid, num_samples: 1, seed: 0}       # grid | random | optuna (TPE)
    scheduler: {name: fifo}               # fifo | asha (grace_period, reduction_factor) | pbt (perturbation_interval,
                                          #   mutations, quantile_fraction, synch: all trials wait at each perturbation)
    metric: target_im                     # any metric the trainer reports; oracle_* needs allow_oracle: true
    resources: {cpu: 1, gpu: 0}           # per trial; fractional GPUs pack several trials on one GPU
    max_concurrent: 2
    experiments: {comparison: {}, sweep: {variants: [iw_maxsquare], ...}}  # optional: run in order
    confirm: {from: tune}                 # in an experiment: run each variant with the configuration that the
                                          #   earlier experiment `tune` selected with its own objective

Tune, then confirm: an experiment with `confirm: {from: NAME}` takes, per variant, the configuration that the
earlier experiment NAME selected with its own (label-free) objective, the best mean over NAME's seeds, and runs it
on its own `seeds`, which must be seeds NAME never used. Its variants that NAME did not search (e.g.
`source_only`) run with their fixed settings. It searches nothing itself.

The source stage takes the base config, the `data.*`, `model.*` and `runtime.*` keys of an experiment's `set`
(what its trials must share with it), then `source.set`: a trial's learning rate or loss weight never changes
the source model it starts from.

Every experiment's every trial configuration (and every source configuration) goes through
`msl.config.load_config`, with each distribution's extreme values, so that a typo or an out-of-range value
fails here with the key that holds it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from msl.config import (
    METRIC_MODES,
    ConfigError,
    TrainConfig,
    check_known_keys,
    config_to_dict,
    load_config,
    read_yaml,
)
from study.layout import is_safe_name

# Built-in loss variants (paper names); a space file may override or add to them.
VARIANTS: dict[str, dict[str, Any]] = {
    "source_only": {"loss.target": "none", "model.multi_level": False},  # sees no target data at all
    "adabn": {
        "loss.target": "none",
        "model.multi_level": False,
        "loss.adabn": True,
    },  # target only through BN
    "entropy": {"loss.target": "entropy", "model.multi_level": False},
    "iw_entropy": {"loss.target": "iw_entropy", "model.multi_level": False},
    "maxsquare": {"loss.target": "maxsquare", "model.multi_level": False},
    "iw_maxsquare": {"loss.target": "iw_maxsquare", "model.multi_level": False},
    "iw_maxsquare_multi": {"loss.target": "iw_maxsquare", "model.multi_level": True},
    "hard": {"loss.target": "hard", "model.multi_level": False},
}
DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint", "quniform")
SEARCH_ALGORITHMS = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha", "pbt")
EXPERIMENT_KEYS = (
    "set",
    "seeds",
    "variants",
    "params",
    "search",
    "scheduler",
    "metric",
    "mode",
    "allow_oracle",
    "benchmark",
    "resources",
    "max_concurrent",
    "checkpoints_to_keep",
    "retries",
    "confirm",
)
SHARED_WITH_SOURCE = (
    "data.",
    "model.",
    "runtime.",
)  # prefixes of `set` keys that the source stage also takes
TOP_KEYS = ("name", "base", "config", "source", "experiments", *EXPERIMENT_KEYS)


class SpaceError(ValueError):
    """A search space file that cannot run; the message names the key."""


@dataclass
class Experiment:
    name: str
    overrides: dict[str, Any]  # fixed dotted overrides of the base config
    seeds: list[int]
    variants: dict[str, dict[str, Any]]
    params: dict[str, dict[str, Any]]  # dotted key -> {distribution: arguments}
    search: dict[str, Any]
    scheduler: dict[str, Any]
    metric: str
    mode: str
    allow_oracle: bool
    benchmark: str | None
    resources: dict[str, float]
    max_concurrent: int | None
    checkpoints_to_keep: int
    retries: int
    confirm_from: str | None = None  # an earlier experiment whose selected configurations this one confirms
    variant_params: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=dict
    )  # variant -> its own grids

    @property
    def oracle(self) -> bool:
        return self.metric.startswith("oracle_")

    def grid_size(self, variant: str | None = None) -> int:
        """Grid points of the shared params, times those of `variant`'s own params when one is named."""
        own = self.variant_params.get(variant, {}).values() if variant else ()
        return math.prod(len(spec["grid"]) for spec in [*self.params.values(), *own] if "grid" in spec)

    def num_trials(self) -> int:
        points = sum(self.grid_size(variant) for variant in self.variants)
        return points * len(self.seeds) * self.search["num_samples"]


@dataclass
class Space:
    name: str
    path: Path
    base: dict[str, Any]  # base training config as a nested mapping
    source_overrides: dict[str, Any]
    source_checkpoint: str | None
    experiments: list[Experiment] = field(default_factory=list)

    def trial_config(
        self,
        experiment: Experiment,
        variant: str,
        seed: int,
        params: dict[str, Any],
        source_checkpoint: str | None = None,
    ) -> TrainConfig:
        """The checked config of one UDA trial."""
        overrides = {
            **experiment.overrides,
            **experiment.variants[variant],
            **params,
            "stage": "uda",
            "runtime.seed": seed,
        }
        if source_checkpoint is not None:
            overrides["model.weights"] = source_checkpoint
        return load_config(self.base, overrides)

    def source_config(self, experiment: Experiment, seed: int) -> TrainConfig:
        """The checked config of the source model of a seed: the base config, the experiment's fixed overrides
        of what the trials must share with it (`SHARED_WITH_SOURCE`: the data, the network, how it runs; not the
        trials' optimiser, loss or evaluation settings), then the source stage's own `source.set`. The aux head
        is trained so that multi-level variants share the model, and the best checkpoint is chosen on source
        val, as the reference does: no target label, no target validator."""
        shared = {
            key: value for key, value in experiment.overrides.items() if key.startswith(SHARED_WITH_SOURCE)
        }
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


def source_key(cfg: TrainConfig) -> str:
    """Identifies a source model by everything that shapes its weights and its best checkpoint, e.g.
    `seed0-3fa2c1d9`: not how it is run, and not the target data, which a source run only evaluates on (so
    experiments on different target cities share their source models)."""
    resolved = config_to_dict(cfg)
    resolved.pop("runtime")
    resolved["data"] = {k: v for k, v in resolved["data"].items() if not k.startswith("target")}
    resolved["seed"] = cfg.runtime.seed
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


def _number_list(value: Any, length: int, path: str) -> list[float]:
    _require(
        isinstance(value, list)
        and len(value) == length
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value),
        f"{path}: expected a list of {length} numbers, got {value!r}",
    )
    return value


def check_distribution(spec: Any, path: str) -> list[Any]:
    """Validate one distribution spec; return the values that bound it (to try in configs)."""
    _require(
        isinstance(spec, dict) and len(spec) == 1,
        f"{path}: expected one of {', '.join(DISTRIBUTIONS)} with its arguments, e.g. {{uniform: [0, 1]}}, "
        f"got {spec!r}",
    )
    ((kind, args),) = spec.items()
    check_known_keys(spec, DISTRIBUTIONS, f"{path}.", SpaceError)
    if kind in ("choice", "grid"):
        _require(
            isinstance(args, list) and len(args) > 0,
            f"{path}.{kind}: expected a non-empty list, got {args!r}",
        )
        return list(args)
    if kind == "quniform":
        low, high, step = _number_list(args, 3, f"{path}.quniform")
        _require(step > 0, f"{path}.quniform: the step must be > 0, got {step}")
    else:
        low, high = _number_list(args, 2, f"{path}.{kind}")
    _require(low < high, f"{path}.{kind}: the lower bound must be below the upper bound, got {args!r}")
    if kind == "loguniform":
        _require(low > 0, f"{path}.loguniform: bounds must be > 0, got {args!r}")
    if kind == "randint":
        _require(
            all(isinstance(v, int) for v in args), f"{path}.randint: bounds must be integers, got {args!r}"
        )
        return [low, high - 1]  # Tune's randint excludes the upper bound
    return [low, high]


def _overrides(value: Any, path: str) -> dict[str, Any]:
    _require(isinstance(value, dict), f"{path}: expected a mapping of dotted keys to values, got {value!r}")
    return dict(value)


def _variants(value: Any, path: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(variant -> fixed overrides, variant -> its own searched grids)."""
    if isinstance(value, list):
        for name in value:
            _require(
                name in VARIANTS,
                f"{path}: unknown variant {name!r}; built-in variants are "
                f"{', '.join(VARIANTS)} (or give a mapping name -> overrides)",
            )
        return {name: dict(VARIANTS[name]) for name in value}, {}
    _require(isinstance(value, dict) and value, f"{path}: expected a list of variant names or a mapping")
    variants, own_params = {}, {}
    for name, extra in value.items():
        _require_name(name, f"{path}.{name}")
        extra = _overrides(extra or {}, f"{path}.{name}")
        own = _overrides(extra.pop("params", {}), f"{path}.{name}.params")
        for key, spec in own.items():
            _require(
                isinstance(spec, dict) and list(spec) == ["grid"],
                f"{path}.{name}.params.{key}: a variant's own params are grids, e.g. {{grid: [0.1, 1.0]}}; "
                f"got {spec!r}",
            )
        variants[name] = {**VARIANTS.get(name, {}), **extra}
        if own:
            own_params[name] = own
    return variants, own_params


def _experiment(name: str, raw: dict[str, Any], prefix: str) -> Experiment:
    check_known_keys(raw, EXPERIMENT_KEYS, prefix, SpaceError)
    seeds = raw.get("seeds", [0])
    _require(
        isinstance(seeds, list)
        and seeds
        and all(isinstance(s, int) and s >= 0 for s in seeds)
        and len(set(seeds)) == len(seeds),
        f"{prefix}seeds: expected a list of distinct integers >= 0, got {seeds!r}",
    )
    params = _overrides(raw.get("params", {}), f"{prefix}params")
    search = {
        "algorithm": "grid",
        "num_samples": 1,
        "seed": 0,
        **_overrides(raw.get("search", {}), f"{prefix}search"),
    }
    check_known_keys(search, ("algorithm", "num_samples", "seed"), f"{prefix}search.", SpaceError)
    _require(
        search["algorithm"] in SEARCH_ALGORITHMS,
        f"{prefix}search.algorithm: {search['algorithm']!r} is not one of {', '.join(SEARCH_ALGORITHMS)}",
    )
    _require(
        isinstance(search["num_samples"], int) and search["num_samples"] >= 1,
        f"{prefix}search.num_samples: expected an integer >= 1, got {search['num_samples']!r}",
    )
    variants, variant_params = _variants(raw.get("variants", ["maxsquare"]), f"{prefix}variants")
    shared = set(params) & {key for own in variant_params.values() for key in own}
    _require(
        not shared,
        f"{prefix}variants: {sorted(shared)} searched both in params and in a variant's own params",
    )
    _require(
        not variant_params or search["algorithm"] == "grid",
        f"{prefix}variants: a variant's own params are grids; they need search.algorithm grid",
    )
    if search["algorithm"] == "optuna":
        _require(
            len(variants) == 1 and len(seeds) == 1,
            f"{prefix}search.algorithm: optuna (TPE) explores the params of one variant with one seed; "
            f"got {len(variants)} variants and {len(seeds)} seeds (repeat the chosen configuration over seeds "
            "in a grid experiment)",
        )
        _require(
            not any("grid" in spec for spec in params.values() if isinstance(spec, dict)),
            f"{prefix}params: optuna cannot search a grid distribution; use choice",
        )
    scheduler = _scheduler(raw.get("scheduler", {"name": "fifo"}), f"{prefix}scheduler")
    metric = raw.get("metric", "source_val_miou")
    _require(
        metric in METRIC_MODES,
        f"{prefix}metric: {metric!r} is not a metric the trainer reports; choose one "
        f"of {', '.join(METRIC_MODES)}",
    )
    allow_oracle = raw.get("allow_oracle", False)
    _require(isinstance(allow_oracle, bool), f"{prefix}allow_oracle: expected true or false")
    _require(
        not metric.startswith("oracle_") or allow_oracle,
        f"{prefix}metric: {metric!r} reads the target test labels; selecting on it is an oracle result. Set "
        f"allow_oracle: true to ask for it by name, or use a label-free metric (target_im, target_entropy, "
        f"target_max_square, source_val_miou)",
    )
    mode = raw.get("mode", METRIC_MODES[metric])
    _require(mode in ("max", "min"), f"{prefix}mode: expected max or min, got {mode!r}")
    res = {"cpu": 1, "gpu": 0, **_overrides(raw.get("resources", {}), f"{prefix}resources")}
    check_known_keys(res, ("cpu", "gpu"), f"{prefix}resources.", SpaceError)
    _require(
        isinstance(res["cpu"], (int, float)) and res["cpu"] > 0,
        f"{prefix}resources.cpu: expected a number > 0",
    )
    _require(
        isinstance(res["gpu"], (int, float)) and 0 <= res["gpu"] and (res["gpu"] <= 1 or res["gpu"] % 1 == 0),
        f"{prefix}resources.gpu: expected 0, a fraction of one GPU (e.g. 0.25) or a whole number, "
        f"got {res['gpu']!r}",
    )
    integers = {
        "max_concurrent": (raw.get("max_concurrent"), 1),
        "checkpoints_to_keep": (raw.get("checkpoints_to_keep", 2), 1),
        "retries": (raw.get("retries", 1), 0),
    }
    for key, (value, minimum) in integers.items():
        _require(
            value is None and key == "max_concurrent" or isinstance(value, int) and value >= minimum,
            f"{prefix}{key}: expected an integer >= {minimum}, got {value!r}",
        )
    return Experiment(
        name,
        _overrides(raw.get("set", {}), f"{prefix}set"),
        seeds,
        variants,
        params,
        search,
        scheduler,
        metric,
        mode,
        allow_oracle,
        raw.get("benchmark"),
        res,
        raw.get("max_concurrent"),
        integers["checkpoints_to_keep"][0],
        integers["retries"][0],
        _confirm(raw, params, variant_params, search, prefix),
        variant_params,
    )


def _confirm(
    raw: dict[str, Any], params: dict, variant_params: dict, search: dict, prefix: str
) -> str | None:
    """The experiment a `confirm: {from: NAME}` experiment confirms (checked against NAME in `load_space`)."""
    if "confirm" not in raw:
        return None
    confirm = _overrides(raw["confirm"], f"{prefix}confirm")
    check_known_keys(confirm, ("from",), f"{prefix}confirm.", SpaceError)
    _require(
        isinstance(confirm.get("from"), str),
        f"{prefix}confirm.from: expected the name of an earlier experiment",
    )
    _require(
        not params and not variant_params and search["algorithm"] == "grid" and search["num_samples"] == 1,
        f"{prefix}confirm: a confirmation searches nothing itself (no params, no search); it runs the "
        f"configurations that experiment {confirm['from']!r} selected",
    )
    return confirm["from"]


def _scheduler(raw: Any, path: str) -> dict[str, Any]:
    _require(
        isinstance(raw, dict) and raw.get("name") in SCHEDULERS,
        f"{path}.name: expected one of {', '.join(SCHEDULERS)}, got {raw!r}",
    )
    allowed = {
        "fifo": ("name",),
        "asha": ("name", "grace_period", "reduction_factor", "max_iterations"),
        "pbt": ("name", "perturbation_interval", "mutations", "quantile_fraction", "synch"),
    }[raw["name"]]
    check_known_keys(raw, allowed, f"{path}.", SpaceError)
    for key in ("grace_period", "max_iterations", "perturbation_interval"):
        if key in raw:
            _require(isinstance(raw[key], int) and raw[key] >= 1, f"{path}.{key}: expected an integer >= 1")
    if "reduction_factor" in raw:
        _require(
            isinstance(raw["reduction_factor"], (int, float)) and raw["reduction_factor"] > 1,
            f"{path}.reduction_factor: expected a number > 1",
        )
    _require(isinstance(raw.get("synch", False), bool), f"{path}.synch: expected true or false")
    if raw["name"] == "pbt":
        _require(
            "perturbation_interval" in raw and isinstance(raw.get("mutations"), dict) and raw["mutations"],
            f"{path}: pbt needs perturbation_interval and mutations (dotted key -> distribution)",
        )
    return dict(raw)


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
        raw = read_yaml(path)
    except ConfigError as error:
        raise SpaceError(str(error)) from None
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
    for name, own in named.items():
        _require_name(name, f"experiments.{name}")
        _require(isinstance(own, dict) or own is None, f"experiments.{name}: expected a mapping")
        merged = {**shared, **(own or {})}
        prefix = f"experiments.{name}." if "experiments" in raw else ""
        space.experiments.append(_experiment(str(name), merged, prefix))
        _check_confirm(space, prefix)
    _check_configs(space)
    return space


def _check_confirm(space: Space, prefix: str) -> None:
    """A confirmation names an earlier experiment and runs on seeds that experiment never used."""
    experiment = space.experiments[-1]
    if experiment.confirm_from is None:
        return
    earlier = {e.name: e for e in space.experiments[:-1]}
    _require(
        experiment.confirm_from in earlier,
        f"{prefix}confirm.from: {experiment.confirm_from!r} is not an earlier experiment; choose one of "
        f"{', '.join(earlier) or '(none: list the tuning experiment first)'}",
    )
    reused = sorted(set(experiment.seeds) & set(earlier[experiment.confirm_from].seeds))
    _require(
        not reused,
        f"{prefix}seeds: {reused} also ran in {experiment.confirm_from!r}; a confirmation runs on "
        "fresh seeds, so that the selection cannot have fitted their noise",
    )


def searched_params(experiment: Experiment, variant: str) -> dict[str, dict[str, Any]]:
    """Everything searched for one variant: the shared params and the variant's own grids."""
    return {**experiment.params, **experiment.variant_params.get(variant, {})}


def confirmed_params(space: Space, experiment: Experiment, variant: str) -> dict[str, dict[str, Any]]:
    """What the experiment a confirmation takes its configurations from searched for `variant` (else empty)."""
    if experiment.confirm_from is None:
        return {}
    return searched_params(next(e for e in space.experiments if e.name == experiment.confirm_from), variant)


def _check_configs(space: Space) -> None:
    """Build every source config and every trial config at each distribution's bounds."""
    for experiment in space.experiments:
        prefix = f"experiments.{experiment.name}." if len(space.experiments) > 1 else ""
        for seed in experiment.seeds:
            try:
                space.source_config(experiment, seed)
            except ConfigError as error:
                raise SpaceError(f"{prefix}source: {error}") from None
        mutations = _pbt_mutations(experiment, prefix)
        for variant in experiment.variants:
            extremes = {
                key: check_distribution(spec, f"{prefix}params.{key}")
                for key, spec in searched_params(experiment, variant).items()
            }
            for key, values in mutations.items():
                extremes.setdefault(key, values)
            for key, spec in confirmed_params(
                space, experiment, variant
            ).items():  # the earlier search's values
                extremes[key] = check_distribution(spec, key)
            for key, values in extremes.items() or [(None, [None])]:
                for value in values:
                    params = {k: v[0] for k, v in extremes.items()} | ({key: value} if key else {})
                    try:
                        space.trial_config(experiment, variant, experiment.seeds[0], params)
                    except ConfigError as error:
                        where = f"params.{key}={value!r}" if key else f"variants.{variant}"
                        raise SpaceError(f"{prefix}{where}: {error}") from None
        _check_scheduler_fits(experiment, representative_config(space, experiment).optim.iterations, prefix)


def _check_scheduler_fits(experiment: Experiment, iterations: int, prefix: str) -> None:
    """The scheduler's horizon, grace period and perturbation interval within a trial's `optim.iterations`."""
    scheduler = experiment.scheduler
    horizon = scheduler.get("max_iterations", iterations)
    _require(
        horizon <= iterations,
        f"{prefix}scheduler.max_iterations: {horizon} is more than the "
        f"{iterations} iterations a trial runs (optim.iterations)",
    )
    for key in ("grace_period", "perturbation_interval"):
        _require(
            scheduler.get(key, 0) <= horizon,
            f"{prefix}scheduler.{key}: {scheduler.get(key)} is more than "
            f"the {horizon} iterations a trial runs",
        )


def _pbt_mutations(experiment: Experiment, prefix: str) -> dict[str, list[Any]]:
    mutations = experiment.scheduler.get("mutations", {})
    return {
        key: check_distribution(spec, f"{prefix}scheduler.mutations.{key}") for key, spec in mutations.items()
    }


def representative_config(space: Space, experiment: Experiment) -> TrainConfig:
    """A trial config of the experiment (first variant and seed, each searched key at its lower bound), for the
    settings that do not vary between trials, such as iterations and the evaluation interval."""
    params = {key: check_distribution(spec, key)[0] for key, spec in experiment.params.items()}
    return space.trial_config(experiment, next(iter(experiment.variants)), experiment.seeds[0], params)


def max_iterations(space: Space, experiment: Experiment) -> int:
    """Iterations of a full trial (the ASHA horizon unless the scheduler names one)."""
    return (
        experiment.scheduler.get("max_iterations")
        or representative_config(space, experiment).optim.iterations
    )


def _searched_words(experiment: Experiment) -> str:
    parts = [", ".join(f"{k} {v}" for k, v in experiment.params.items())] if experiment.params else []
    parts += [
        f"{variant}: " + ", ".join(f"{k} {v}" for k, v in own.items())
        for variant, own in experiment.variant_params.items()
    ]
    if experiment.confirm_from:
        parts.append(
            f"nothing itself; confirms the configurations that {experiment.confirm_from!r} selects, "
            "on fresh seeds"
        )
    return "; ".join(parts) or "nothing"


def describe_plan(space: Space) -> str:
    """The `--dry-run` summary: trials, what each varies, and the compute budget in iterations."""
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
        seeds, samples = f"{len(experiment.seeds)} seeds", f"{experiment.search['num_samples']} samples"
        product = (
            f"{len(experiment.variants)} variants x {seeds} x {experiment.grid_size()} grid points x {samples}"
            if not experiment.variant_params
            else f"({' + '.join(str(experiment.grid_size(v)) for v in experiment.variants)} grid points of the "
            f"{len(experiment.variants)} variants) x {seeds} x {samples}"
        )
        lines += [
            f"  experiment {experiment.name!r}: {trials} trials = {product}",
            f"    variants: {', '.join(experiment.variants)}; seeds: {experiment.seeds}",
            "    searched: " + _searched_words(experiment),
            f"    search: {experiment.search['algorithm']}; scheduler: {experiment.scheduler['name']}; "
            f"objective: {objective}",
            f"    budget: at most {trials * iterations} trial-iterations ({iterations} per trial); "
            f"resources per trial: {experiment.resources}",
        ]
    return "\n".join(lines)
