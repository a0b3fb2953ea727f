"""A study on a two-node Ray cluster made on one machine: a head and a second `ray start --address` node with
resources of its own, one CPU each, so that two one-CPU trials can only run one per node; `--storage` is a
folder both nodes see. Every trial records the node that ran it (trial.json's node_id)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from study import layout
from study.report import build_report
from study.results import load_study
from tests.ray_nodes import RAY_ENV, ray_node
from tests.test_study import msl_study, read, space_file

pytestmark = pytest.mark.slow
VARIANTS = ["source_only", "maxsquare", "iw_maxsquare", "hard"]
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


def test_a_study_places_trials_on_both_nodes_and_the_report_reads_every_trial(synth, tmp_path):
    space = space_file(
        tmp_path / "space.yaml", synth, seeds=[0], variants=VARIANTS, resources={"cpu": 1}, max_concurrent=2
    )
    storage = tmp_path / "shared"
    with (
        ray_node(num_cpus=1, resources={"head_node": 1}) as address,
        ray_node(head_address=address, num_cpus=1, resources={"node_b": 1}),
    ):
        nodes = cluster_nodes(address)
        result = msl_study("run", space, "--storage", storage, "--address", address)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(nodes) == 2
    second = next(node for node, resources in nodes.items() if "node_b" in resources)
    head = next(node for node, resources in nodes.items() if "head_node" in resources)

    study = storage / "tiny"
    trials = read(study, "main", layout.TRIAL_FILE)
    used = {trial["node_id"] for trial in trials.values()}
    assert used == {head, second}, f"trials ran on {used}, nodes: {nodes}"
    status = read(study, "main", layout.STATUS_FILE)
    assert len(status) == len(VARIANTS) and all(s["status"] == "finished" for s in status.values())

    results = load_study(study)
    assert sorted(results.trials["variant"]) == sorted(VARIANTS)
    assert (results.evals.groupby("trial_name")["iteration"].max() == 12).all()
    report = build_report(study)
    overview = (report.parent / "tables" / "overview.csv").read_text()
    variants = (report.parent / "tables" / "variants_main.csv").read_text()
    assert "main" in overview and all(f"\n{variant}," in variants for variant in VARIANTS)
