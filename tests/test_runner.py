"""Pure scheduling decisions of the study runner (the Ray runs themselves are in test_study.py)."""

import pytest
import yaml

from msl.config import read_yaml
from study.runner import check_resources, create_study, expand_paths, source_cpus
from study.space import Resources, SpaceError, load_space


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


def _space_file(tmp_path, **space):
    base = {
        "data": {"source_root": "${MSL_TEST_UNSET}/source", "target_root": "${MSL_TEST_UNSET}/target"},
        "model": {"arch": "deeplab_resnet18_small"},
        "optim": {"iterations": 10},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "paths", "config": base, **space}))
    return path


def test_paths_are_expanded_after_the_spaces_own_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("MSL_TEST_UNSET", raising=False)
    monkeypatch.setenv("MSL_TEST_ROOT", str(tmp_path / "data"))
    path = _space_file(
        tmp_path,
        set={"data.source_root": "${MSL_TEST_ROOT}/gta5", "data.target_root": "${MSL_TEST_ROOT}/cityscapes"},
    )
    study = create_study(expand_paths(load_space(path)), storage=tmp_path / "studies")
    source = read_yaml(study / "main" / "configs" / "source_seed0.yaml")
    assert source["data"]["source_root"] == str(tmp_path / "data" / "gta5")
    assert source["data"]["target_root"] == str(tmp_path / "data" / "cityscapes")


def test_an_unset_variable_in_a_path_a_run_reads_names_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("MSL_TEST_UNSET", raising=False)
    with pytest.raises(
        SpaceError, match=r"source stage: data.source_root: path '\$\{MSL_TEST_UNSET\}/source' uses"
    ):
        expand_paths(load_space(_space_file(tmp_path, set={"data.target_root": "/data/cityscapes"})))


def test_a_study_name_cannot_leave_the_storage_folder(tmp_path):
    with pytest.raises(ValueError, match="--name: '../escaped' is not allowed as a name"):
        create_study(
            load_space(_space_file(tmp_path, set={"data.source_root": "/a", "data.target_root": "/b"})),
            name="../escaped",
            storage=tmp_path / "studies",
        )
    assert not (tmp_path / "escaped").exists()


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
    path = _space_file(
        tmp_path, set={"data.source_root": "/a", "data.target_root": "/b"}, resources=resources
    )
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
