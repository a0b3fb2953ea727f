"""A target loss of the user's own (`loss.target: package.module:function`, docs/losses.md §1.9): the worked
example against a naive computation, the checks at config load with their one-line messages, a study's
variant and searched option, and the modules a study ships to its Ray workers. A real Ray study with a user
loss on a second node is in test_multinode.py."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from docs.examples.my_losses import focal_entropy
from msl import cli
from msl.config import ConfigError, load_config, save_config
from msl.losses import build_target_loss, entropy_loss
from study import plugins
from study.cli import main as study_main
from study.space import SpaceError, load_space

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "docs.examples.my_losses:focal_entropy"


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Writes a module into the working directory (tmp_path, not on sys.path) and returns its name; sys.path
    and the imported modules are restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    written = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        importlib.invalidate_caches()
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_the_example_is_the_entropy_loss_at_gamma_0_and_weights_pixels_by_their_uncertainty():
    logits = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert focal_entropy(logits, gamma=0.0).item() == pytest.approx(entropy_loss(logits).item(), rel=1e-6)
    expected = 0.0  # one pixel at a time: (1 - max p)^2 * H(p), averaged over pixels, divided by C
    for b in range(2):
        for h in range(3):
            for w in range(4):
                exps = [math.exp(logits[b, c, h, w].item()) for c in range(5)]
                p = [e / sum(exps) for e in exps]
                expected += (1 - max(p)) ** 2 * -sum(q * math.log(q) for q in p)
    assert focal_entropy(logits, gamma=2.0).item() == pytest.approx(expected / (2 * 3 * 4) / 5, rel=1e-9)


def test_the_trainer_calls_a_user_loss_on_float32_logits_with_its_options():
    logits = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1)).bfloat16()
    loss = build_target_loss(EXAMPLE, options={"gamma": 1.5})(logits)
    assert loss.dtype == torch.float32
    assert loss.item() == focal_entropy(logits.float(), gamma=1.5).item()


def test_a_config_names_a_user_loss_and_its_options_and_saves_them(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"loss": {"target": EXAMPLE, "options": {"gamma": 3}}}))
    cfg = load_config(path, ["loss.options.gamma=0.5"])
    assert (cfg.loss.target, cfg.loss.options) == (EXAMPLE, {"gamma": 0.5})
    assert load_config(save_config(cfg, tmp_path / "saved.yaml")).loss == cfg.loss


BROKEN = [  # module source (None: no such module), options, the message's key and words
    (
        None,
        {},
        "loss.target",
        "cannot import 'userloss_absent' of 'userloss_absent:loss': ModuleNotFoundError",
    ),
    ("import no_such_dependency_xyz\n", {}, "loss.target", "No module named 'no_such_dependency_xyz'"),
    ("def other(logits):\n    return logits.mean()\n", {}, "loss.target", "has no 'loss'"),
    ("loss = 2.0\n", {}, "loss.target", "is a float, not a function"),
    (
        "def loss(logits, gamma=1.0):\n    return logits.mean()\n",
        {"gama": 2},
        "loss.options",
        "got an unexpected keyword argument 'gama'",
    ),
    (
        "def loss(logits, *, gamma):\n    return logits.mean()\n",
        {},
        "loss.options",
        "missing a required argument: 'gamma'",
    ),
    ("def loss(logits):\n    raise RuntimeError('boom')\n", {}, "loss.target", "raised RuntimeError: boom"),
    ("def loss(logits):\n    return 0.5\n", {}, "loss.target", "returned 0.5; expected a scalar"),
    (
        "def loss(logits):\n    return logits.mean(dim=1)\n",
        {},
        "loss.target",
        "returned a tensor of shape (2, 8, 8); expected a scalar float tensor",
    ),
    ("def loss(logits):\n    return logits.mean() / 0\n", {}, "loss.target", "expected a finite loss"),
    ("def loss(logits):\n    return logits.detach().mean()\n", {}, "loss.target", "without a gradient"),
]


@pytest.mark.parametrize(("source", "options", "key", "words"), BROKEN)
def test_a_user_loss_that_cannot_work_fails_at_load_with_one_line_naming_the_key(
    plugin, source, options, key, words
):
    name = "userloss_absent" if source is None else plugin(f"userloss_{len(sys.modules)}", source)
    with pytest.raises(ConfigError) as error:
        load_config(None, {"loss.target": f"{name}:loss", "loss.options": options})
    message = str(error.value)
    assert message.startswith(f"{key}: ") and words in message and "\n" not in message


def test_a_user_loss_imports_from_the_working_directory_and_is_tried_with_the_configs_classes(plugin):
    name = plugin(
        "userloss_classes", "def loss(logits):\n    assert logits.shape[1] == 13\n    return logits.mean()\n"
    )
    assert (
        load_config(None, {"loss.target": f"{name}:loss", "data.num_classes": 13}).loss.target
        == f"{name}:loss"
    )
    with pytest.raises(
        ConfigError, match=r"^loss.target: .* of shape \(2, 19, 8, 8\) .* raised AssertionError"
    ):
        load_config(None, {"loss.target": f"{name}:loss"})


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            {"loss.target": "maxsquare", "loss.options.gamma": 2},
            "loss.options: {'gamma': 2} are for a loss of",
        ),
        ({"loss.target": "max square"}, "loss.target: 'max square' is not allowed; choose one of 'none'"),
        ({"loss.target": EXAMPLE, "loss.options": [2]}, "loss.options: expected a mapping"),
    ],
)
def test_options_belong_to_a_user_loss_and_a_name_is_built_in_or_an_import_path(overrides, words):
    with pytest.raises(ConfigError, match=f"^{words}".replace("(", r"\(").replace("{", r"\{")):
        load_config(None, overrides)


def test_msl_train_refuses_a_broken_user_loss_before_any_work(plugin, tmp_path, capsys):
    plugin("userloss_train", "def loss(logits, gamma=1.0):\n    return logits.mean()\n")
    (tmp_path / "run.yaml").write_text(
        yaml.safe_dump({"loss": {"target": "userloss_train:loss", "options": {"gama": 2}}})
    )
    assert cli.main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("msl: error: ") and "loss.options: " in error and "gama" in error
    assert "\n" not in error and not (tmp_path / "run").exists()


def _space(tmp_path: Path, **space) -> Path:
    raw = {
        "config": {"data": {"source_root": "/d/s", "target_root": "/d/t"}, "optim": {"iterations": 10}},
        **space,
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path / "space.yaml"


def test_a_study_variant_with_a_user_loss_searches_its_options(tmp_path):
    space = load_space(
        _space(
            tmp_path,
            experiments={
                "shared": {
                    "variants": {"mine": {"loss.target": EXAMPLE}},
                    "params": {"loss.options.gamma": {"uniform": [0, 4]}},
                },
                "own_grid": {
                    "variants": {
                        "iw_maxsquare": {},
                        "mine": {"loss.target": EXAMPLE, "params": {"loss.options.gamma": {"grid": [0, 2]}}},
                    }
                },
            },
        )
    )
    shared, own_grid = space.experiments
    cfg = space.trial_config(shared, "mine", 0, {"loss.options.gamma": 2.5})
    assert (cfg.loss.target, cfg.loss.options) == (EXAMPLE, {"gamma": 2.5})
    assert own_grid.num_trials() == 3
    assert space.trial_config(own_grid, "iw_maxsquare", 0, {}).loss.options == {}


def test_a_space_refuses_an_option_its_loss_does_not_take_naming_the_searched_key(tmp_path, capsys):
    path = _space(
        tmp_path,
        variants={"maxsquare": {}, "mine": {"loss.target": EXAMPLE}},
        params={"loss.options.gamma": {"uniform": [0, 4]}},
    )
    with pytest.raises(
        SpaceError, match=r"^params.loss.options.gamma=0: loss.options: \{'gamma': 0\} are for"
    ):
        load_space(path)
    path = _space(tmp_path, variants={"mine": {"loss.target": EXAMPLE, "loss.options.gama": 1}})
    assert study_main(["run", str(path), "--dry-run"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("msl-study: error: variants.mine.loss.options: ") and "'gama'" in error


def test_a_study_ships_the_top_level_module_of_each_user_loss_to_its_workers(plugin, tmp_path):
    plugin("userloss_single", "def loss(logits):\n    return logits.mean()\n")
    variants = {
        "maxsquare": {},
        "mine": {"loss.target": EXAMPLE},
        "single": {"loss.target": "userloss_single:loss"},
    }
    space = load_space(_space(tmp_path, variants=variants))
    assert plugins.runtime_env(space) == {
        "py_modules": sorted([str(ROOT / "docs"), str(tmp_path / "userloss_single.py")])
    }
    assert plugins.runtime_env(load_space(_space(tmp_path, variants=["maxsquare", "hard"]))) == {}
    assert plugins.top_level_module("msl.losses:max_square_loss") == ROOT / "msl"
