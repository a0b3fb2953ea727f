"""The synchronous schedulers (study/schedulers.py, study/space.py): their settings are checked before Ray,
and Ray's HyperBandScheduler, with its brackets placed at ASHA's rungs, makes the decisions that successive
halving written out here makes. Driven through `study.replay.drive` (Tune's controller stood in), no Ray."""

from __future__ import annotations

import math
import random

import pytest
import yaml

from study.replay import drive
from study.schedulers import synchronous_scheduler
from study.space import (
    HyperBandScheduler,
    SpaceError,
    SuccessiveHalvingScheduler,
    bracket_sizes,
    describe_plan,
    load_space,
    rungs,
)

BASE = {
    "config": {
        "data": {"source_root": "/data/gta5", "target_root": "/data/cs"},
        "model": {"arch": "deeplab_resnet18_small"},
        "optim": {"iterations": 40},
        "eval": {"every": 5},
    },
    "variants": ["iw_maxsquare"],
    "params": {"loss.lambda_target": {"loguniform": [0.01, 1.0]}},
    "search": {"algorithm": "random", "num_samples": 8},
    "metric": "target_im",
}


def _load(tmp_path, **extra):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**BASE, **extra}))
    return load_space(path)


def test_the_synchronous_schedulers_are_settings_of_the_space(tmp_path):
    space = _load(
        tmp_path, scheduler={"name": "successive_halving", "grace_period": 5, "reduction_factor": 2}
    )
    (experiment,) = space.experiments
    assert experiment.scheduler == SuccessiveHalvingScheduler(grace_period=5, reduction_factor=2.0)
    assert (
        "scheduler: {name: successive_halving, grace_period: 5, reduction_factor: 2.0, max_iterations: 40}"
        in (describe_plan(space))
    )
    hyperband = _load(tmp_path, scheduler={"name": "hyperband", "grace_period": 10, "max_iterations": 40})
    assert hyperband.experiments[0].scheduler == HyperBandScheduler(grace_period=10, max_iterations=40)


@pytest.mark.parametrize(
    "scheduler, extra, message",
    [
        (
            {"name": "successive_halving", "grace_period": 4, "reduction_factor": 2},
            {},
            "scheduler.grace_period: the rung at iteration 4 is not an evaluation iteration (eval.every 5)",
        ),
        (
            {"name": "hyperband", "grace_period": 5, "reduction_factor": 2.5},
            {},
            "scheduler.reduction_factor: hyperband needs a whole number, got 2.5",
        ),
        (
            {"name": "successive_halving", "grace_period": 5, "reduction_factor": 2},
            {"max_concurrent": 2},
            "max_concurrent: successive_halving compares the 8 trials of a bracket at each rung",
        ),
        (
            {"name": "hyperbnd"},
            {},
            "scheduler.name: expected one of fifo, asha, hyperband, successive_halving",
        ),
    ],
)
def test_a_synchronous_setting_that_cannot_work_fails_with_its_key(tmp_path, scheduler, extra, message):
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(tmp_path, scheduler=scheduler, **extra)


def test_rungs_and_brackets_are_ashas_rungs_and_hyperbands_sizes():
    spec = HyperBandScheduler(grace_period=1, reduction_factor=2)
    assert rungs(spec, 16) == [1, 2, 4, 8]
    # Li et al.'s ceil((s_max + 1) / (s + 1) * eta^s) for s = 4 .. 0 halvings, s_max = 4
    assert bracket_sizes(spec, 16, trials=100) == [16, 10, 7, 5, 5]
    assert bracket_sizes(SuccessiveHalvingScheduler(grace_period=1, reduction_factor=2), 16, 100) == [100]
    scheduler = synchronous_scheduler(spec, 16, 100)
    brackets = [scheduler._create_bracket(s) for s in range(5)]  # as Ray fills a band: position 0 first
    assert [(b._n0, b._r0, b._halves) for b in brackets] == [
        (16, 1, 4),
        (10, 2, 3),
        (7, 4, 2),
        (5, 8, 1),
        (5, 16, 0),
    ]


def _curves(trials: int, horizon: int, every: int, seed: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    return {
        f"t_{index:05d}": [
            {"iteration": i, "target_im": rng.random()} for i in range(every, horizon + 1, every)
        ]
        for index in range(trials)
    }


def _halving(curves: dict[str, list[dict]], grace: int, eta: int, horizon: int) -> dict[str, int]:
    """Synchronous successive halving written out: all trials to `grace`, then at each rung the best
    ceil(n / eta) of the n trials there (lower target_im is better; ties to the earlier trial) go on."""
    at = {name: {r["iteration"]: r["target_im"] for r in records} for name, records in curves.items()}
    alive, rung, reached = list(curves), grace, {}
    while rung < horizon:
        keep = math.ceil(len(alive) / eta)
        ranked = sorted(alive, key=lambda name: at[name][rung])[:keep]
        reached |= {name: rung for name in alive if name not in ranked}
        alive, rung = [name for name in alive if name in ranked], rung * eta
    return reached | dict.fromkeys(alive, horizon)


@pytest.mark.parametrize("grace, eta", [(2, 2), (2, 3), (4, 2), (6, 3)])
@pytest.mark.parametrize("concurrency", [1, 2, 5])
def test_successive_halving_through_rays_hyperband_equals_it_written_out(grace, eta, concurrency):
    horizon, trials = 36, 11
    curves = _curves(trials, horizon, every=2, seed=grace * 10 + eta)
    spec = SuccessiveHalvingScheduler(grace_period=grace, reduction_factor=eta)
    scheduler = synchronous_scheduler(spec, horizon, trials)
    scheduler.set_search_properties("target_im", "min")
    assert drive(scheduler, curves, concurrency) == _halving(curves, grace, eta, horizon)


def test_hyperband_runs_its_brackets_one_after_another_most_halvings_first():
    """20 trials, grace 1, eta 2, horizon 16: brackets of 16 (rungs 1, 2, 4, 8) then 10 (rungs 2, 4, 8), of
    which 4 trials exist. Ray keeps ceil(n / eta) of the bracket's planned n: 5 of those 4 at rung 2, then 3,
    then 2."""
    curves = _curves(20, 16, every=1, seed=1)
    spec = HyperBandScheduler(grace_period=1, reduction_factor=2)
    scheduler = synchronous_scheduler(spec, 16, 20)
    scheduler.set_search_properties("target_im", "min")
    reached = drive(scheduler, curves, concurrency=3)
    first, second = dict(list(curves.items())[:16]), dict(list(curves.items())[16:])
    assert {name: reached[name] for name in first} == _halving(first, 1, 2, 16)
    at = {name: {r["iteration"]: r["target_im"] for r in records} for name, records in second.items()}
    by_4 = sorted(second, key=lambda name: at[name][4])
    by_8 = sorted(by_4[:3], key=lambda name: at[name][8])
    expected = {by_4[3]: 4, by_8[2]: 8, by_8[0]: 16, by_8[1]: 16}
    assert {name: reached[name] for name in second} == expected
