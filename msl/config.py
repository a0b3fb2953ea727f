"""Typed configuration of one training run: a tree of dataclasses loaded from YAML with strict checking.

Defaults are the reference's GTA5 -> Cityscapes recipe (docs/training.md §8, §12). Every way into a run (the
`msl` CLI, the study layer's trials, the tests) goes through `load_config`, so a typo or an out-of-range value
fails before any work starts, with the key's dotted path, the value and what is allowed:

    cfg = load_config("run.yaml", ["loss.lambda_target=0.09", "optim.lr=1e-4"])
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml

from msl.io import write_text_atomic
from msl.labels import DATASET_NAMES, NUM_CLASSES_CHOICES
from msl.losses import TARGET_LOSS_NAMES
from msl.models.build import ARCH_NAMES, DEEPLAB_ARCHS
from msl.objectives import METRIC_MODES, MODES, metric_mode
from msl.user_loss import UserLossError, check_user_loss, is_import_path

T = TypeVar("T")
OPTIMIZERS = ("sgd", "adamw")


class ConfigError(ValueError):
    """A configuration value or key that is not allowed; the message names its dotted path."""


def spec(
    default: Any,
    *,
    choices: tuple | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    length: int | None = None,
    parse: typing.Callable[[Any, str], Any] | None = None,
) -> Any:
    """A dataclass field with the constraints `_check_value` enforces. `parse(value, dotted_path)`, if given,
    converts the raw value instead of the annotation (for a value with more than one form)."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "length": length, "parse": parse}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    """Which datasets, where they live on disk, and how images are prepared. Sizes are [width, height]."""

    source: str = spec("gta5", choices=DATASET_NAMES)
    source_root: str = ""
    source_train_split: str = "train"
    source_val_split: str = "val"
    source_size: list[int] = spec([1280, 720], length=2, gt=0)
    target: str = spec("cityscapes", choices=DATASET_NAMES)
    target_root: str = ""
    target_city: str | None = None  # NTHU CrossCity city: Rome, Rio, Tokyo or Taipei
    target_train_split: str = "train"
    target_val_split: str = "val"
    target_size: list[int] = spec([1024, 512], length=2, gt=0)
    num_classes: int = spec(19, choices=NUM_CLASSES_CHOICES)
    batch_size: int = spec(1, ge=1)
    num_workers: int = spec(4, ge=0)
    flip: bool = True
    blur: bool = True
    random_scale: list[float] | None = spec(None, length=2, gt=0)  # e.g. [0.5, 2.0]; off in the reference
    random_crop: list[int] | None = spec(None, length=2, gt=0)  # [width, height]; off in the reference
    normalization: str = spec("auto", choices=("auto", "bgr_mean", "imagenet"))  # auto: follows the weights
    full_res_eval_labels: bool = True  # False: labels resized to the input size, as the reference evaluates
    # Decoded images and labels kept in memory, up to this many MiB per process and shared by the runs it
    # trains in turn (msl.data.dataset.decoded_cache); 0: decode on every access. For small data sets.
    cache_mb: int = spec(0, ge=0)


@dataclass
class ModelConfig:
    arch: str = spec("deeplabv2_resnet101", choices=ARCH_NAMES)
    multi_level: bool = False  # train the aux head too (CE on source, self-produced guidance on target)
    aspp_branches: int = spec(2, choices=(2, 4))  # 2 reproduces the reference's early-returning classifier
    weights: str | None = None  # DeepLab ImageNet init, torchvision ImageNet weights or an msl checkpoint
    freeze_bn: bool = False


@dataclass
class OptimConfig:
    # The paper's SGD, or AdamW, with which the synthetic benchmark's source stage trains its network from
    # scratch (msl/configs/synth.yaml).
    optimizer: str = spec("sgd", choices=OPTIMIZERS)
    lr: float = spec(2.5e-4, gt=0)
    head_lr_mult: float = spec(10.0, gt=0)
    momentum: float = spec(0.9, ge=0, lt=1)  # SGD's momentum; AdamW's beta1 (its beta2 is 0.999)
    weight_decay: float = spec(5e-4, ge=0)
    poly_power: float = spec(0.9, ge=0)
    iterations: int = spec(29750, ge=1)  # optimiser steps of this run (reference UDA: 10 epochs of 2975)
    poly_horizon: int | None = spec(29760, ge=1)  # iter_max of the poly schedule; None: `iterations`
    # SGD only: step each backbone parameter as often as the reference lists it in its SGD group (3-4 times;
    # msl.optim explains the arithmetic). Off: every parameter once, the nominal learning rate.
    reference_param_groups: bool = False


def _target_loss(value: Any, path: str) -> str:
    """A built-in loss's name, or the import path `package.module:function` of a user loss (checked with its
    options when the whole config is loaded: `check_target_loss`)."""
    if not isinstance(value, str) or not (value in TARGET_LOSS_NAMES or is_import_path(value)):
        allowed = ", ".join(repr(name) for name in TARGET_LOSS_NAMES)
        raise ConfigError(
            f"{path}: {value!r} is not allowed; choose one of {allowed}, or give the import path "
            "package.module:function of a loss of your own"
        )
    return value


@dataclass
class LossConfig:
    # A built-in loss (msl.losses), or `package.module:function`: a loss of your own (docs/losses.md §1.9)
    target: str = spec("maxsquare", parse=_target_loss)
    options: dict[str, Any] = field(default_factory=dict)  # a user loss's keyword arguments
    lambda_target: float = spec(0.1, ge=0)
    lambda_seg: float = spec(0.1, ge=0)
    iw_ratio: float = spec(0.2, ge=0, le=1)
    threshold: float = spec(0.95, gt=0, lt=1)
    # Only for target `none` without multi-level (no target term): forward each target batch in train mode,
    # without a loss, so that batch-norm statistics adapt to the target (AdaBN, Li et al. 2016). False: the
    # UDA stage sees no target data at all (source-only). Variants that train a target term forward the target
    # batches anyway.
    adabn: bool = False


@dataclass
class EvalConfig:
    every: int = spec(2975, ge=1)  # iterations between evaluations; the last iteration always evaluates
    max_images: int | None = spec(None, ge=1)  # cap on val images per split (None: the whole split)
    validator_images: int = spec(100, ge=1)  # fixed subset of target-train images for label-free validators
    # [width, height] of the float16 softmax maps of the validator images kept per evaluation for the
    # study-level validators (msl.probs_maps); None: none kept. Disk: images x classes x width x height x 2
    # bytes per evaluation, e.g. 100 x 19 x 32 x 16 x 2 = 1.9 MB.
    probs_size: list[int] | None = spec([32, 16], length=2, gt=0)
    flip: bool = False  # flip test-time augmentation
    logged_images: int = spec(2, ge=0)  # images with predictions written to TensorBoard per eval
    # Pixels of the validator images that `target_snd` samples; its cost grows with their square (4096: 0.27
    # s on one CPU thread, every evaluation).
    snd_pixels: int = spec(4096, ge=2)


@dataclass
class SelectionConfig:
    """Which reported metric picks the best checkpoint. Label-free by default: the target val labels are the
    test set, so selecting on them (`oracle_miou`) is an oracle the user must name explicitly."""

    metric: str = spec("source_val_miou", choices=tuple(METRIC_MODES))
    mode: str | None = spec(None, choices=MODES)  # None: the metric's own direction

    @property
    def direction(self) -> str:
        return metric_mode(self.metric, self.mode)


@dataclass
class RuntimeConfig:
    device: str = spec("auto", choices=("auto", "cpu", "cuda"))
    seed: int = spec(0, ge=0)
    bf16: bool = True  # autocast on CUDA
    channels_last: bool = True  # faster on CUDA and on the CPU (benchmarks/uda_iteration.py)
    # torch.compile the training forward once per run (msl.trainer); evaluation stays eager
    compile: bool = False
    cudnn_benchmark: bool = False  # measured slower for the paper iteration on an H200 (90 -> 109 ms)
    threads: int | None = spec(None, ge=1)  # CPU intra-op threads; None: torch's default
    log_every: int = spec(50, ge=1)  # iterations between reading losses back to the host
    progress: bool = True


@dataclass
class TrainConfig:
    stage: str = spec("uda", choices=("source", "uda"))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def poly_horizon(self) -> int:
        return self.optim.poly_horizon or self.optim.iterations


# ------------------------------------------------------------------------------------------------------------
# Loading and checking


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str) -> Any:
    """`value` as type `tp` (the dataclass annotations used above), or ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(options[0], value, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of {_describe(tp)} keys, got {value!r}")
        return build(tp, value, path + ".")
    if tp is Any:
        return value
    if origin is dict:
        return _convert_mapping(tp, value, path)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list of {_describe(item_type)}, got {value!r}")
        return [_convert(item_type, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp in _SCALARS:
        return _SCALARS[tp](value, path)
    raise TypeError(f"{path}: unsupported annotation {tp!r}")


def _convert_mapping(tp: Any, value: Any, path: str) -> dict:
    key_type, value_type = typing.get_args(tp)
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {value!r}")
    return {_convert(key_type, k, path): _convert(value_type, v, f"{path}.{k}") for k, v in value.items()}


def _to_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    return value


def _to_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    return value


def _to_float(value: Any, path: str) -> float:
    # YAML 1.1 reads `1e-4` (no dot) as a string: accept any string that is a number.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite number, got {value!r}")
    return float(value)


def _to_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _check_value(value: Any, meta: typing.Mapping[str, Any], path: str) -> None:
    if value is None:
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        allowed = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"{path}: {value!r} is not allowed; choose one of {allowed}")
    if meta.get("length") is not None and len(value) != meta["length"]:
        raise ConfigError(f"{path}: expected {meta['length']} values, got {value!r}")
    for item in value if isinstance(value, list) else [value]:
        bounds = [
            ("ge", ">=", lambda a, b: a >= b),
            ("gt", ">", lambda a, b: a > b),
            ("le", "<=", lambda a, b: a <= b),
            ("lt", "<", lambda a, b: a < b),
        ]
        for key, symbol, ok in bounds:
            if meta.get(key) is not None and not ok(item, meta[key]):
                raise ConfigError(f"{path}: {value!r} is out of range; it must be {symbol} {meta[key]}")


def check_known_keys(
    raw: typing.Mapping, known: typing.Sequence[str], prefix: str = "", error: type[ValueError] = ConfigError
) -> None:
    """Raise `error` for the first key of `raw` not in `known`, naming its dotted path and the closest
    name."""
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
            raise error(f"{prefix}{key}: unknown key; {hint}valid keys here: {', '.join(known)}")


def build(cls: type[T], raw: typing.Mapping, prefix: str = "", **given: Any) -> T:
    """The dataclass `cls` (typed fields made with `spec`) from a mapping of its keys, each converted to its
    annotation and checked: ConfigError names the first wrong key by its dotted path (`prefix` + key). `given`
    sets fields that are not keys of the mapping (e.g. a name the caller knows)."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in given]
    check_known_keys(raw, [f.name for f in fields], prefix)
    kwargs = dict(given)
    for f in fields:
        if f.name in raw:
            parse = f.metadata.get("parse")
            value = (parse or partial(_convert, hints[f.name]))(raw[f.name], prefix + f.name)
            _check_value(value, f.metadata, prefix + f.name)
            kwargs[f.name] = value
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """`'loss.lambda_target=0.09'` -> `('loss.lambda_target', 0.09)`; the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. loss.lambda_target=0.09")
    return key.strip(), yaml.safe_load(value)


def apply_overrides(raw: dict, overrides: typing.Iterable[str] | typing.Mapping[str, Any]) -> dict:
    """A copy of the nested mapping `raw` with dotted-key overrides set (strings `KEY=VALUE` or a mapping)."""
    items = overrides.items() if isinstance(overrides, typing.Mapping) else map(parse_override, overrides)
    result = _deep_copy(raw)
    for dotted, value in items:
        node = result
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parents[: i + 1])}: is a value, so '{dotted}' cannot be set")
            node = child
        node[leaf] = value
    return result


def _deep_copy(raw: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def read_yaml(path: str | Path) -> dict:
    """A YAML file that must hold a mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def load_config(
    source: str | Path | dict | None = None, overrides: typing.Iterable[str] | typing.Mapping[str, Any] = ()
) -> TrainConfig:
    """The checked TrainConfig from a YAML path or a mapping (None: the defaults), with overrides on top."""
    raw = read_yaml(source) if isinstance(source, (str, Path)) else dict(source or {})
    try:
        cfg = build(TrainConfig, apply_overrides(raw, overrides))
        check_target_loss(cfg)
        check_key_pairs(cfg)
        return cfg
    except ConfigError as error:
        where = f"{source}: " if isinstance(source, (str, Path)) else ""
        raise ConfigError(f"{where}{error}") from None


def check_target_loss(cfg: TrainConfig) -> None:
    """ConfigError naming `loss.target` or `loss.options` unless a user loss imports, takes its options and
    returns a finite scalar with a gradient on random logits; options are refused for a built-in loss."""
    if not is_import_path(cfg.loss.target):
        if cfg.loss.options:
            raise ConfigError(
                f"loss.options: {cfg.loss.options!r} are for a loss of your own (loss.target "
                "package.module:function); the built-in losses take loss.iw_ratio and loss.threshold"
            )
        return
    try:
        check_user_loss(cfg.loss.target, cfg.loss.options, cfg.data.num_classes)
    except UserLossError as error:
        raise ConfigError(f"loss.{error.key}: {error}") from None


def check_key_pairs(cfg: TrainConfig) -> None:
    """The rules between keys, so that a config that cannot train is refused when it is loaded (`msl train`,
    `msl-study run --dry-run`) rather than inside a run: ConfigError naming the keys and what to do."""
    optim, data = cfg.optim, cfg.data
    if optim.reference_param_groups and optim.optimizer != "sgd":
        raise ConfigError(
            "optim.reference_param_groups: reproduces the reference's SGD only; set optim.optimizer: sgd or "
            f"turn it off (optimizer is {optim.optimizer!r})"
        )
    if optim.reference_param_groups and cfg.model.arch not in DEEPLAB_ARCHS:
        raise ConfigError(
            f"optim.reference_param_groups: only for the DeepLab ResNet archs ({', '.join(DEEPLAB_ARCHS)}); "
            f"turn it off for model.arch {cfg.model.arch!r}"
        )
    if data.random_scale is not None and data.random_crop is None:
        raise ConfigError(
            "data.random_scale: needs data.random_crop, so that every image of a batch has the same size; "
            "set data.random_crop: [width, height] or turn random_scale off"
        )


def check_data_roots(cfg: TrainConfig) -> None:
    """ConfigError naming the data root that a run of `cfg` lacks: `data.source_root` for either stage (both
    train on source images), `data.target_root` for stage uda. A rule of running, not of a config's shape:
    the defaults name no data and still load (`load_config(None)`), and what trains checks it before any
    work: `msl train`, the trainer, and `msl-study run` (at `--dry-run` too) for every source and trial
    config of a study."""
    data = cfg.data
    if not data.source_root:
        raise ConfigError(
            f"data.source_root: is empty, but stage {cfg.stage} trains on the source images "
            f"({data.source}); set data.source_root to their folder"
        )
    if cfg.stage == "uda" and not data.target_root:
        raise ConfigError(
            f"data.target_root: is empty, but stage uda trains on the target images ({data.target}); set "
            "data.target_root to their folder, or train stage: source"
        )


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (loadable again by `load_config`), atomically: a crash never leaves
    an empty config.yaml that a resume would then misread."""
    return write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
