"""The driver's progress lines, `[msl-study HH:MM:SS] message`, printed and flushed at once."""

from __future__ import annotations

from datetime import datetime


def log(message: str) -> None:
    print(f"[msl-study {datetime.now():%H:%M:%S}] {message}", flush=True)
