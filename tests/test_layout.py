"""The study directory's contract (study.layout): the plan written by the runner and read back by every
reader, as one typed `Plan`."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from study import layout
from study.runner import _write_plan, create_study, expand_paths
from study.space import load_space
from tests import fakes


def test_the_plan_the_runner_writes_reads_back_as_written(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "p",
                "config": {"data": {"source_root": "/a", "target_root": "/b"}, "optim": {"iterations": 10}},
                "variants": ["source_only", "maxsquare"],
                "params": {"loss.lambda_target": {"loguniform": [0.01, 1.0]}},
                "search": {"algorithm": "random", "num_samples": 3, "seed": 4},
                "seeds": [0, 1],
                "metric": "target_entropy",
            }
        )
    )
    space = expand_paths(load_space(path))
    study = create_study(space, storage=tmp_path / "studies")
    (experiment,) = space.experiments
    _write_plan(space, experiment, study, 10, {})
    written = json.loads(layout.plan_file(study, experiment.name).read_text())
    plan = layout.read_plan(study, experiment.name)
    assert dataclasses.asdict(plan) == written  # every key the runner writes is a field, none lost
    assert list(written) == [field.name for field in dataclasses.fields(layout.Plan)]
    assert (plan.metric, plan.mode, plan.oracle) == ("target_entropy", "min", False)
    assert list(plan.variants) == ["source_only", "maxsquare"] and plan.seeds == [0, 1]
    assert plan.variants["maxsquare"]["loss.target"] == "maxsquare"
    assert plan.searched == {"loss.lambda_target": {"loguniform": [0.01, 1.0]}}
    assert (plan.num_trials, plan.seeds_per_sample, plan.max_iterations) == (12, 1, 10)
    assert plan.confirm is None and len(plan.class_names) == plan.num_classes == 19


def test_a_plan_written_before_later_keys_existed_reads_with_the_defaults(tmp_path):
    layout.write_json(
        layout.plan_file(tmp_path, "old"),
        {"experiment": "old", "metric": "target_im", "max_iterations": 30, "num_trials": 4},
    )
    plan = layout.read_plan(tmp_path, "old")
    assert plan.mode == "min"  # the metric's own direction (msl.objectives.METRIC_MODES)
    assert (plan.seeds_per_sample, plan.confirm, plan.oracle, plan.scheduler) == (
        1,
        None,
        False,
        {"name": "fifo"},
    )


@pytest.mark.parametrize(
    ("added", "dropped", "words"),
    [
        ({"surprise": 1}, None, r"unknown keys \['surprise'\], missing keys \[\]"),
        ({}, "max_iterations", r"unknown keys \[\], missing keys \['max_iterations'\]"),
    ],
)
def test_a_plan_with_keys_this_version_does_not_know_is_refused_naming_the_file(
    tmp_path, added, dropped, words
):
    plan = fakes.plan(
        "e",
        metric="target_im",
        mode="min",
        variants=["maxsquare"],
        seeds=[0],
        searched={},
        scheduler="fifo",
        num_trials=1,
    )
    data = {key: value for key, value in dataclasses.asdict(plan).items() if key != dropped} | added
    layout.write_json(layout.plan_file(tmp_path, "e"), data)
    with pytest.raises(ValueError, match=rf"e/plan.json: not a plan this version of msl reads \({words}\)"):
        layout.read_plan(tmp_path, "e")
