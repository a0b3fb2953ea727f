"""The driver's progress lines, `[msl-study HH:MM:SS] message`, printed and flushed at once, and their ETA."""

from __future__ import annotations

from datetime import datetime


def log(message: str) -> None:
    print(f"[msl-study {datetime.now():%H:%M:%S}] {message}", flush=True)


def eta_words(done: float, elapsed_s: float, remaining: float) -> str:
    """ ", ETA ~1.5 min" for `remaining` units of work at the pace of `done` units in `elapsed_s` seconds,
    or "" before any progress and when nothing remains."""
    rate = done / max(elapsed_s, 1e-9)
    return f", ETA ~{remaining / rate / 60:.1f} min" if rate > 0 and remaining > 0 else ""
