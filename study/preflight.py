"""What `msl-study run` checks before Ray starts, `--dry-run` alike (and `resume` for the data): every dataset
root and split that a source model or a trial reads exists and holds its files (paths after expansion), the
study name is free (`study.runner.check_study_free`), and, for a local Ray, some trial of each experiment
fits this machine's CPUs and GPUs. A cluster's nodes are checked when the driver attaches
(`study.cluster.check_resources`).
"""

from __future__ import annotations

import os
from pathlib import Path

from msl.config import TrainConfig, config_to_dict
from study.cluster import check_resources
from study.space import Space, SpaceError, check_distribution


def run_configs(space: Space) -> list[tuple[str, TrainConfig]]:
    """(where, config) of every source model and of one trial per variant of each experiment (each searched
    key at its first value): the data settings the study's runs read."""
    configs = []
    for experiment in space.experiments:
        if not space.source_checkpoint:
            configs += [
                (f"experiments.{experiment.name}: source stage", space.source_config(experiment, seed))
                for seed in experiment.seeds
            ]
        for variant in experiment.variants:
            params = {k: check_distribution(d, k)[0] for k, d in experiment.searched_params(variant).items()}
            cfg = space.trial_config(experiment, variant, experiment.seeds[0], params)
            configs.append((f"experiments.{experiment.name}.variants.{variant}: uda stage", cfg))
    return configs


def check_data(space: Space) -> None:
    """SpaceError naming the experiment and stage whose run would not find its data: a root, a split, its
    images or labels (the datasets the trainer builds, `msl.trainer.build_run_data`; files are not decoded:
    `msl data verify` does that)."""
    from msl.data.files import DatasetError
    from msl.trainer import build_run_data

    checked = set()
    for where, cfg in run_configs(space):
        data = repr(config_to_dict(cfg)["data"])
        if data in checked:
            continue
        checked.add(data)
        try:
            build_run_data(cfg, normalization="imagenet")
        except (DatasetError, ValueError) as error:
            raise SpaceError(
                f"{where}: {error}; fix the space's data settings (msl data verify checks a tree)"
            ) from None


def local_node() -> dict:
    """This machine as Ray would see it, in the form of `ray.nodes()`: its CPUs and CUDA GPUs."""
    import torch

    return {
        "Alive": True,
        "Resources": {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())},
    }


def check_before_ray(space: Space, study_dir: Path, address: str | None) -> None:
    """Everything `msl-study run` can refuse before Ray starts (see the module docstring)."""
    from study.runner import check_study_free

    check_study_free(study_dir)
    if not (address or os.environ.get("RAY_ADDRESS")):
        check_resources(space.experiments, [local_node()])
    check_data(space)
