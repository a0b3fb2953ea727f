"""Pure scheduling decisions of the study runner (the Ray runs themselves are in test_study.py)."""

import pytest

from study.runner import source_cpus


@pytest.mark.parametrize(("resources", "cluster_cpus", "count", "expected"), [
    ({"cpu": 1, "gpu": 0}, 2.0, 3, 2 / 3),  # the quickstart: three models share two cores, all at once
    ({"cpu": 1, "gpu": 0}, 2.0, 2, 1),  # enough CPUs: what a trial asks for
    ({"cpu": 4, "gpu": 0}, 64.0, 3, 4),
    ({"cpu": 4, "gpu": 0.25}, 8.0, 3, 4),  # GPU models keep the trials' resources
    ({"cpu": 1, "gpu": 0}, 2.0, 0, 1),
])
def test_source_models_share_the_cpus_instead_of_queueing_in_a_partial_wave(resources, cluster_cpus, count,
                                                                             expected):
    assert source_cpus(resources, cluster_cpus, count) == pytest.approx(expected)
