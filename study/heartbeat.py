"""The study driver's heartbeat: `driver.json` in the study directory, rewritten every `INTERVAL_S` seconds
while `msl-study run` or `resume` runs, and a last time ("ended") when it returns or raises. `msl-study
status` reads it to tell a dead driver (`kill -9`, a lost machine) at once, instead of waiting for its trials
to go silent: one whose heartbeat is older than `DEAD_AFTER_S`, or whose process is gone on this host.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from study import layout

INTERVAL_S = 10.0
DEAD_AFTER_S = 6 * INTERVAL_S  # a driver busy in a long write still beats; one silent this long is gone


@dataclass
class Driver:
    """What a study's driver is doing: "running", "ended" (it returned or raised) or "dead" (killed)."""

    state: str
    since: float  # its start while running; its last heartbeat when ended or dead
    pid: int
    hostname: str


@contextmanager
def heartbeat(study_dir: Path, interval_s: float = INTERVAL_S) -> Iterator[None]:
    """Beat while the body runs (a daemon thread), then record that the driver ended."""
    path, started, stop = study_dir / layout.DRIVER_FILE, time.time(), threading.Event()

    def beat(state: str) -> None:
        info = {"state": state, "pid": os.getpid(), "hostname": socket.gethostname(), "started": started}
        layout.write_json(path, {**info, "time": time.time()})

    def loop() -> None:
        while not stop.wait(interval_s):
            beat("running")

    beat("running")
    thread = threading.Thread(target=loop, name="msl-study heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        beat("ended")


def read_driver(study_dir: Path, now: float) -> Driver | None:
    """The driver's state at `now`, or None for a study without a heartbeat (run by an older msl)."""
    try:
        info = layout.read_json(study_dir / layout.DRIVER_FILE)
    except (OSError, ValueError):
        return None
    state = info["state"]
    if state == "running" and (now - info["time"] > DEAD_AFTER_S or not _alive(info)):
        state = "dead"
    since = info["started"] if state == "running" else info["time"]
    return Driver(state, since, info["pid"], info["hostname"])


def _alive(info: dict) -> bool:
    """False only when the driver ran on this host and its process is gone."""
    if info["hostname"] != socket.gethostname():
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that id
        return True
    return True
