"""The source models (study.sources): how many CPUs each asks for, and when an existing one is reused."""

from __future__ import annotations

import json

import pytest

from study.sources import _source_is_complete, source_cpus
from study.space import Resources
from tests import fakes


@pytest.mark.parametrize(
    ("resources", "cluster_cpus", "count", "expected"),
    [
        (Resources(cpu=1), 2.0, 3, 2 / 3),  # the quickstart: three models share two cores, all at once
        (Resources(cpu=1), 2.0, 2, 1),  # enough CPUs: what a trial asks for
        (Resources(cpu=4), 64.0, 3, 4),
        (Resources(cpu=4, gpu=0.25), 8.0, 3, 4),  # GPU models keep the trials' resources
        (Resources(cpu=1), 2.0, 0, 1),
    ],
)
def test_source_models_share_the_cpus_instead_of_queueing_in_a_partial_wave(
    resources, cluster_cpus, count, expected
):
    assert source_cpus(resources, cluster_cpus, count) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("best", "logged", "complete"),
    [
        (True, [4, 8, 12], True),
        (True, [4, 8], False),  # killed before its last evaluation
        (False, [4, 8, 12], False),  # no best checkpoint
        (True, [], False),
        (True, None, False),  # no metrics.jsonl
    ],
)
def test_a_source_model_is_reused_only_when_it_ran_every_iteration(tmp_path, best, logged, complete):
    if best:
        fakes.checkpoint(tmp_path / "checkpoints" / "best.pt", 8)
    if logged is not None:
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i}) + "\n" for i in logged))
    assert _source_is_complete(tmp_path, 12) is complete
