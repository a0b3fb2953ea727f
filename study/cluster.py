"""The Ray cluster a study runs on, seen from the driver: attach to a running one (`--address` or
RAY_ADDRESS) or start a local one, and check before any work that some node can hold a trial of each
experiment.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from study import plugins
from study.progress import log
from study.space import Experiment, Space, SpaceError


def connect(address: str | None, runtime_env: dict[str, Any] | None = None) -> None:
    """Attach to a running cluster (`--address` or RAY_ADDRESS), or start a local Ray sized to this
    machine; `runtime_env` is the job's Ray runtime environment (study.plugins)."""
    # Tune warns when it snapshots experiment state often; with a checkpoint per evaluation that is expected.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # No result.json, progress.csv or TensorBoard files of Ray's: our runs write their own, and Ray would
    # point TensorBoard at its temporary folder (run_study_dir names the study instead).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Without those files the result grid Tune builds at the end of a run warns once per trial that it found
    # no metrics; msl reads its own (study.results).
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        except ConnectionError as error:
            raise ConnectionError(
                f"{error}. If the cluster uses token authentication (Ray >= 2.59 enables it for "
                "`ray start`), set RAY_AUTH_MODE=token here too; the token is read from "
                "RAY_AUTH_TOKEN or ~/.ray/auth_token"
            ) from error
        log(f"attached to the Ray cluster at {address}: {ray.cluster_resources()}")
    else:
        ray.init(include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
        log(f"started a local Ray instance: {ray.cluster_resources()}")


def check_resources(experiments: list[Experiment], nodes: list[dict[str, Any]]) -> None:
    """SpaceError unless some live node of the cluster (`ray.nodes()`) can hold one trial of each experiment:
    otherwise Tune would wait forever, and with `log_to_driver=False` without a word."""
    alive = [node["Resources"] for node in nodes if node.get("Alive")]
    for experiment in experiments:
        wanted = {"CPU": experiment.resources.cpu, "GPU": experiment.resources.gpu}
        if any(all(node.get(name, 0.0) >= amount for name, amount in wanted.items()) for node in alive):
            continue
        have = "; ".join(f"{node.get('CPU', 0.0):g} CPU and {node.get('GPU', 0.0):g} GPU" for node in alive)
        raise SpaceError(
            f"experiments.{experiment.name}.resources: a trial asks for {wanted['CPU']:g} CPU and "
            f"{wanted['GPU']:g} GPU on one node, but no node of the Ray cluster has that much (nodes: "
            f"{have or 'none'}); lower `resources` in the space or add such a node"
        )


def prepare_cluster(space: Space, address: str | None) -> None:
    """Connect to Ray, its workers able to import the space's user losses, and check that the cluster can run
    the space's trials at all."""
    connect(address, plugins.runtime_env(space))
    check_resources(space.experiments, ray.nodes())
