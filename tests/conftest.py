"""Shared fixtures: one small synthetic benchmark per test session and a tiny training config on it."""

from pathlib import Path

import pytest

from msl.data.synth import generate


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    """The small-scale synthetic benchmark (GTA5-format source, Cityscapes-format target), made once."""
    out = tmp_path_factory.mktemp("synth")
    generate(out, seed=0, scale="small", progress=False)
    return out


def tiny_config(synth: Path) -> dict:
    """A run config (as a mapping) that trains the small model at 64x32 in seconds."""
    return {
        "stage": "source",
        "data": {
            "source_root": str(synth / "source"),
            "target_root": str(synth / "target"),
            "source_size": [64, 32],
            "target_size": [64, 32],
            "batch_size": 2,
            "num_workers": 0,
        },
        "model": {"arch": "deeplab_resnet18_small"},
        "optim": {"lr": 0.01, "iterations": 4, "poly_horizon": None},
        "eval": {"every": 2, "validator_images": 4, "max_images": 4, "logged_images": 1},
        "runtime": {"threads": 1, "progress": False, "log_every": 1},
    }
