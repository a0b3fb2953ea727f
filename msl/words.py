"""Counts in messages: "1 variant", "3 variants", never "1 variants"."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, in the plural (`plural`, or `noun` + "s") unless `n` is 1."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
