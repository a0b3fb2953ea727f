"""What a run directory records about where its numbers came from: code revision, package versions, seed."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from msl.io import write_text_atomic

PACKAGES = ("msl", "torch", "torchvision", "numpy", "ray", "optuna", "pandas")


def expand_path(path: str | None) -> str:
    """A config path with `~` and `$VARIABLES` expanded; an unset variable is an error naming it."""
    if not path:
        return ""
    expanded = os.path.expanduser(os.path.expandvars(path))
    if "$" in expanded:
        raise ValueError(f"path {path!r} uses an environment variable that is not set")
    return expanded


def git_revision() -> str:
    """The commit of the msl checkout (with `+dirty` for uncommitted changes), or 'unknown' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

        revision = run("rev-parse", "HEAD")
        if revision.returncode != 0:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return revision.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_run_info(path: Path, seed: int, device: torch.device, resumed: bool = False) -> None:
    """Record where and how the run started; a resume keeps that record and appends one of its own to
    `resumes`."""
    info = {
        "started": datetime.now(timezone.utc).isoformat(),
        "git_revision": git_revision(),
        "versions": package_versions(),
        "seed": seed,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "command": sys.argv,
        "hostname": platform.node(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if resumed and path.is_file():
        original = json.loads(path.read_text())
        resume = {
            ("resumed" if key == "started" else key): value for key, value in info.items() if key != "seed"
        }
        info = {**original, "resumes": [*original.get("resumes", []), resume]}
    write_text_atomic(path, json.dumps(info, indent=2) + "\n")
