"""Attaching to a Ray cluster (study.cluster), without one: a space no node can hold is refused at once."""

from __future__ import annotations

import pytest
import yaml

from study.cluster import check_resources
from study.space import SpaceError, load_space


@pytest.mark.parametrize(
    ("resources", "fits"),
    [
        ({"cpu": 1, "gpu": 0}, True),
        ({"cpu": 4, "gpu": 0.5}, True),  # the GPU node
        ({"cpu": 1, "gpu": 1}, True),
        ({"cpu": 8, "gpu": 0}, False),  # more CPUs than any one node has, though the cluster has 12
        ({"cpu": 1, "gpu": 2}, False),
    ],
)
def test_resources_no_node_can_provide_fail_at_once(tmp_path, resources, fits):
    path = tmp_path / "space.yaml"
    base = {"data": {"source_root": "/a", "target_root": "/b"}, "model": {"arch": "deeplab_resnet18_small"}}
    path.write_text(yaml.safe_dump({"name": "fits", "config": base, "resources": resources}))
    experiments = load_space(path).experiments
    nodes = [
        {"Alive": True, "Resources": {"CPU": 6.0, "GPU": 1.0, "memory": 1e9}},
        {"Alive": True, "Resources": {"CPU": 6.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
    ]
    if fits:
        check_resources(experiments, nodes)
    else:
        with pytest.raises(
            SpaceError, match="main.resources: a trial asks for .* no node of the Ray cluster"
        ):
            check_resources(experiments, nodes)
