"""Real Ray nodes for the slow tests, each a `ray start --block` process of its own: stopping one stops
exactly the processes it started (never `ray stop`, which would stop every Ray of this user on the machine,
other people's tests included). Every port is chosen free; each node keeps its files in a temp dir of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
# `ray start` enables token authentication (Ray >= 2.59); a driver must then ask for it too.
RAY_ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ports(head: bool) -> list[str]:
    names = [
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
    ]
    options = [f"--{name}={free_port()}" for name in names]
    return (
        [*options, f"--ray-client-server-port={free_port()}", "--include-dashboard=false"]
        if head
        else options
    )


@contextmanager
def ray_node(
    *, head_address: str | None = None, num_cpus: int, num_gpus: int = 0, resources: dict | None = None
):
    """A head node (no `head_address`) or a node joining `head_address`; yields the head's address."""
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Unix socket paths are limited
    address = head_address or f"127.0.0.1:{free_port()}"
    role = [f"--address={head_address}"] if head_address else ["--head", f"--port={address.split(':')[1]}"]
    command = [
        str(BIN / "ray"),
        "start",
        "--block",
        *role,
        f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}",
        f"--resources={json.dumps(resources or {})}",
        f"--temp-dir={temp_dir}",
        *_ports(head=head_address is None),
    ]
    log = temp_dir / "ray_start.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=RAY_ENV, start_new_session=True
        )
    try:
        deadline = time.time() + 120
        while STARTED not in log.read_text():
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"`{' '.join(command)}` did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield address
    finally:
        stop(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the `ray start --block` process (it stops the processes of its node), then SIGKILL whatever is
    left of the process group it leads."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
