"""Training runs on the embedded synthetic benchmark for the calibration scripts: generated sets, jobs run in
parallel processes (1 thread each, as a study runs its trials), finished runs reused, the standard header.

Imported by benchmarks/synth_calibration.py and benchmarks/small_model_ablation.py (run them from the
repository root: `python benchmarks/<script>.py`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import msl
from msl.config import load_config
from msl.data.synth import SYNTH_VERSION, generate
from msl.run_dir import RunDir

CONFIG = Path(msl.__file__).parent / "configs" / "synth.yaml"
DEFAULT_SHIFT = 0.5  # msl.data.synth.generate's default
# The UDA stage of the quickstart (search_spaces/quickstart.yaml), on top of synth.yaml (the source stage).
UDA_STAGE = {
    "stage": "uda",
    "optim.optimizer": "sgd",
    "optim.lr": 0.01,
    "optim.iterations": 30,
    "eval.every": 10,
    "model.multi_level": False,
}


@dataclass
class Job:
    """One training run: overrides on top of synth.yaml, and where it runs."""

    name: str
    run_dir: Path
    overrides: dict = field(default_factory=dict)


def run_job(job: Job) -> list[dict]:
    """Train (or reuse a finished run in `job.run_dir`) and return its evaluation records."""
    run = RunDir(job.run_dir)
    cfg = load_config(CONFIG, job.overrides)
    records = run.read_metrics()
    if records and records[-1]["iteration"] == cfg.optim.iterations:
        return records
    from msl.trainer import train

    train(cfg, run.path)
    return run.read_metrics()


def run_jobs(jobs: list[Job], parallel: int) -> dict[str, list[dict]]:
    """Records of all jobs by name, `parallel` at a time in fresh processes (each sets its own thread
    count)."""
    with ProcessPoolExecutor(max_workers=parallel, mp_context=get_context("spawn")) as pool:
        return dict(zip([job.name for job in jobs], pool.map(run_job, jobs), strict=True))


def synthetic_set(work: Path, shift: float) -> Path:
    """The default-scale set of `shift` under `work`, generated unless already there."""
    out = work / f"synth_shift{shift:g}"
    info = out / "synth.json"
    if info.is_file():
        settings = json.loads(info.read_text())
        if (settings["shift"], settings["scale"], settings["version"]) == (shift, "default", SYNTH_VERSION):
            return out
    generate(out, shift=shift, progress=False)
    return out


def source_overrides(data: Path, seed: int) -> dict:
    """synth.yaml's source stage on the set in `data`, scored on its whole target val split, training the aux
    head as a study's source stage does (so that multi-level variants can start from it)."""
    return {
        "model.multi_level": True,
        "data.source_root": str(data / "source"),
        "data.target_root": str(data / "target"),
        "runtime.seed": seed,
        "runtime.progress": False,
    }


def oracle_overrides(data: Path, seed: int) -> dict:
    """The same stage trained on the target train split *with* its labels (the oracle)."""
    return {
        **source_overrides(data, seed),
        "data.source": "cityscapes",
        "data.source_root": str(data / "target"),
        "data.source_train_split": "train",
        "data.source_val_split": "val",
    }


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    models = (
        [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        if cpuinfo.is_file()
        else []
    )
    return f"{models[0] if models else platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores"


def header(title: str, say) -> None:
    """Title, machine, date, command and the base config, as every results file starts."""
    base = load_config(CONFIG)
    say(f"# {title}")
    say()
    say(f"- machine: {machine()} (load average at start: {os.getloadavg()[0]:.1f})")
    say(f"- date: {datetime.date.today().isoformat()}")
    say(f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
    say(
        f"- base config: msl/configs/synth.yaml ({base.model.arch}, batch {base.data.batch_size}, "
        f"{base.optim.optimizer} lr {base.optim.lr}, {base.optim.iterations} source iterations, "
        f"{base.runtime.threads} thread per run); UDA stage: "
        f"{', '.join(f'{k}={v}' for k, v in UDA_STAGE.items())}"
    )
    say()


class Report:
    """Markdown lines, printed as they come and written to a file at the end when one is given."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def write(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(self.lines) + "\n")


def percent(value: float) -> str:
    return f"{100 * value:.1f}"
