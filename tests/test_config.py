"""The typed config: reference defaults, strict checking with dotted paths, overrides, round trip."""

import math

import pytest
import yaml

from msl.config import (
    ConfigError,
    TrainConfig,
    check_data_roots,
    load_config,
    parse_override,
    save_config,
)
from msl.objectives import is_better


def test_defaults_are_the_reference_recipe():
    cfg = load_config()
    assert isinstance(cfg, TrainConfig)
    assert (cfg.optim.lr, cfg.optim.head_lr_mult, cfg.optim.momentum) == (2.5e-4, 10.0, 0.9)
    assert (cfg.optim.weight_decay, cfg.optim.poly_power) == (5e-4, 0.9)
    assert (cfg.loss.target, cfg.loss.lambda_target, cfg.loss.iw_ratio) == ("maxsquare", 0.1, 0.2)
    assert (cfg.loss.lambda_seg, cfg.loss.threshold) == (0.1, 0.95)
    assert cfg.data.source_size == [1280, 720] and cfg.data.target_size == [1024, 512]
    assert cfg.data.batch_size == 1 and cfg.model.aspp_branches == 2
    assert cfg.poly_horizon == 29760
    assert not cfg.selection.metric.startswith("oracle")


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump({"stage": "source", "loss": {"target": "entropy"}, "optim": {"lr": "1e-4"}})
    )
    cfg = load_config(path, ["loss.lambda_target=0.09", "data.source_size=[640, 360]", "model.weights=null"])
    assert cfg.stage == "source" and cfg.loss.target == "entropy"
    assert cfg.optim.lr == 1e-4  # YAML reads 1e-4 as a string; a float field accepts it
    assert cfg.loss.lambda_target == 0.09 and cfg.data.source_size == [640, 360]
    assert load_config(None, {"optim.iterations": 7}).poly_horizon == 29760
    assert load_config(None, {"optim.iterations": 7, "optim.poly_horizon": None}).poly_horizon == 7


def test_saved_config_loads_back_identical(tmp_path):
    cfg = load_config(None, ["loss.target=hard", "data.random_crop=[512, 256]", "runtime.threads=1"])
    assert load_config(save_config(cfg, tmp_path / "out" / "config.yaml")) == cfg


# Every kind of bad value, with the message it must give (tests/test_errors.py runs each through the CLI too).
BAD_OVERRIDES = [
    (["model.arch=deeplab_resnet50"], "model.arch: 'deeplab_resnet50' is not allowed; choose one of"),
    (
        ["optim.reference_param_groups=true", "optim.optimizer=adamw"],
        "optim.reference_param_groups: reproduces the reference's SGD only; set optim.optimizer: sgd",
    ),
    (
        ["optim.reference_param_groups=true", "model.arch=small_segnet"],
        "optim.reference_param_groups: only for the DeepLab ResNet archs (deeplabv2_resnet101, "
        "deeplab_resnet18_small); turn it off for model.arch 'small_segnet'",
    ),
    (["data.random_scale=[0.5, 2.0]"], "data.random_scale: needs data.random_crop"),
    (["loss.lamda_target=0.1"], "loss.lamda_target: unknown key; did you mean 'loss.lambda_target'?"),
    (["optimiser.lr=0.1"], "optimiser: unknown key; did you mean 'optim'?"),
    (["optim.lr=-0.001"], "optim.lr: -0.001 is out of range; it must be > 0"),
    (["optim.lr=.inf"], "optim.lr: expected a finite number, got inf"),
    (["loss.lambda_target=nan"], "loss.lambda_target: expected a finite number, got nan"),
    (["loss.threshold=1.0"], "loss.threshold: 1.0 is out of range; it must be < 1"),
    (["loss.threshold=0"], "loss.threshold: 0.0 is out of range; it must be > 0"),
    (["loss.target=maxsquares"], "loss.target: 'maxsquares' is not allowed; choose one of 'none'"),
    (["data.batch_size=two"], "data.batch_size: expected an integer, got 'two'"),
    (["data.batch_size=2.5"], "data.batch_size: expected an integer, got 2.5"),
    (["model.multi_level=1"], "model.multi_level: expected true or false, got 1"),
    (["data.target_size=[1024]"], "data.target_size: expected 2 values, got [1024]"),
    (["data.target_size=[1024, -512]"], "data.target_size: [1024, -512] is out of range; it must be > 0"),
    (["loss=0.1"], "loss: expected a mapping of LossConfig keys, got 0.1"),
    (["loss.target=hard", "loss.target.x=1"], "loss.target: is a value, so 'loss.target.x' cannot be set"),
    (["lambda_target"], "expected KEY=VALUE"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_OVERRIDES)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(overrides, expected):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert expected in str(error.value)


# A run that lacks the data it trains on, with the message it must give (tests/test_errors.py runs each
# through `msl train` too).
MISSING_DATA_ROOTS = [
    (["stage=uda", "data.target_root=''"], "data.target_root: is empty, but stage uda trains on the target"),
    (["stage=uda", "data.source_root=''"], "data.source_root: is empty, but stage uda trains on the source"),
    (["stage=source", "data.source_root=''"], "data.source_root: is empty, but stage source trains on the"),
]
ROOTS = {"data": {"source_root": "/data/gta5", "target_root": "/data/cityscapes"}}


@pytest.mark.parametrize(("overrides", "expected"), MISSING_DATA_ROOTS)
def test_a_run_needs_the_data_roots_of_its_stage(overrides, expected):
    cfg = load_config(ROOTS, overrides)  # a config without data loads: the defaults name none
    with pytest.raises(ConfigError) as error:
        check_data_roots(cfg)
    assert str(error.value).startswith(expected)


def test_a_source_run_needs_no_target_root_and_the_defaults_name_no_data():
    check_data_roots(load_config(ROOTS, ["stage=source", "data.target_root=''"]))
    check_data_roots(load_config(ROOTS))
    with pytest.raises(ConfigError, match="^data.source_root: is empty"):
        check_data_roots(load_config(None))


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  momentum: 1.5\n")
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: optim\.momentum: 1\.5 is out of range; it must be < 1"
    ):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(bad)


def test_parse_override_reads_yaml_values():
    assert parse_override("a.b=0.5") == ("a.b", 0.5)
    assert parse_override("a= true") == ("a", True)
    assert parse_override("x=[1, 2]") == ("x", [1, 2])
    assert parse_override("p=path/with=equals") == ("p", "path/with=equals")


@pytest.mark.parametrize(
    ("value", "best", "mode", "better"),
    [
        (0.5, 0.4, "max", True),
        (0.4, 0.5, "max", False),
        (0.4, 0.5, "min", True),
        (0.5, 0.4, "min", False),
        (0.5, 0.5, "max", False),  # a tie keeps the earlier
        (0.5, 0.5, "min", False),
        (math.nan, 0.5, "max", False),  # NaN never wins ...
        (None, 0.5, "min", False),
        (math.nan, math.nan, "max", False),
        (-math.inf, math.nan, "max", True),  # ... and anything beats it
        (3, None, "min", True),
        (math.inf, 1e308, "max", True),
    ],
)
def test_is_better_under_a_mode(value, best, mode, better):
    assert is_better(value, best, mode) is better
