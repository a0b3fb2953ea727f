"""A study on a two-node Ray cluster made on one machine: a head and a second `ray start --address` node with
resources of its own, one CPU each, so that two one-CPU trials can only run one per node; `--storage` is a
folder both nodes see. Every trial records the node that ran it (trial.json's node_id). A second study on the
same cluster trains a user loss whose module only the driver can import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from study import layout
from study.report import build_report
from study.results import load_study
from tests.ray_nodes import RAY_ENV, ray_node
from tests.test_study import msl_study, read, space_file

pytestmark = pytest.mark.slow
VARIANTS = ["source_only", "maxsquare", "iw_maxsquare", "hard"]
EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "my_losses.py"
NODES_SCRIPT = (
    "import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
    "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))"
)


def cluster_nodes(address: str) -> dict[str, dict]:
    """Node id -> resources of the live nodes, as a separate driver sees them."""
    result = subprocess.run(
        [sys.executable, "-c", NODES_SCRIPT, address],
        capture_output=True,
        text=True,
        env=RAY_ENV,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_nodes():
    """(the head's address, the head's node id, the second node's id) of one two-node cluster."""
    with (
        ray_node(num_cpus=1, resources={"head_node": 1}) as address,
        ray_node(head_address=address, num_cpus=1, resources={"node_b": 1}),
    ):
        nodes = cluster_nodes(address)
        assert len(nodes) == 2, nodes
        head = next(node for node, resources in nodes.items() if "head_node" in resources)
        second = next(node for node, resources in nodes.items() if "node_b" in resources)
        yield address, head, second


def test_a_study_places_trials_on_both_nodes_and_the_report_reads_every_trial(two_nodes, synth, tmp_path):
    address, head, second = two_nodes
    space = space_file(
        tmp_path / "space.yaml", synth, seeds=[0], variants=VARIANTS, resources={"cpu": 1}, max_concurrent=2
    )
    storage = tmp_path / "shared"
    result = msl_study("run", space, "--storage", storage, "--address", address)
    assert result.returncode == 0, result.stdout + result.stderr

    study = storage / "tiny"
    trials = read(study, "main", layout.TRIAL_FILE)
    used = {trial["node_id"] for trial in trials.values()}
    assert used == {head, second}, f"trials ran on {used}, nodes: {head} (head), {second}"
    status = read(study, "main", layout.STATUS_FILE)
    assert len(status) == len(VARIANTS) and all(s["status"] == "finished" for s in status.values())

    results = load_study(study)
    assert sorted(results.trials["variant"]) == sorted(VARIANTS)
    assert (results.evals.groupby("trial_name")["iteration"].max() == 12).all()
    report = build_report(study)
    overview = (report.parent / "tables" / "overview.csv").read_text()
    variants = (report.parent / "tables" / "variants_main.csv").read_text()
    assert "main" in overview and all(f"\n{variant}," in variants for variant in VARIANTS)


def test_both_nodes_train_a_user_loss_only_the_driver_can_import_and_reading_needs_it_no_more(
    two_nodes, synth, tmp_path
):
    """The user's module is on the driver's PYTHONPATH, which the Ray nodes (started before, without it) do
    not have: the study ships it (study/plugins.py). Once it is deleted, report, status and compare still
    work."""
    address, head, second = two_nodes
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copyfile(EXAMPLE, plugins / "mn_user_losses.py")
    mine = {
        "loss.target": "mn_user_losses:focal_entropy",
        "params": {"loss.options.gamma": {"grid": [0.0, 2.0]}},
    }
    space = space_file(
        tmp_path / "space.yaml",
        synth,
        seeds=[0],
        variants={"mine": mine},
        resources={"cpu": 1},
        max_concurrent=2,
    )
    study = tmp_path / "shared" / "tiny"
    driver_path = {"PYTHONPATH": str(plugins)}
    result = msl_study("run", space, "--storage", study.parent, "--address", address, env=driver_path)
    assert result.returncode == 0, result.stdout + result.stderr

    status = read(study, "main", layout.STATUS_FILE)
    assert len(status) == 2 and all(s["status"] == "finished" for s in status.values()), status
    trials = read(study, "main", layout.TRIAL_FILE)
    assert {trial["node_id"] for trial in trials.values()} == {head, second}
    assert sorted(trial["params"]["loss.options.gamma"] for trial in trials.values()) == [0.0, 2.0]

    shutil.rmtree(plugins)
    for command in ("report", "status", "compare"):
        read_only = msl_study(command, study, env=driver_path)
        assert read_only.returncode == 0, read_only.stdout + read_only.stderr
    assert "mn_user_losses:focal_entropy" in (study / "report" / "report.md").read_text()
