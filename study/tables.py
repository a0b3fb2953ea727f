"""How the report's numbers are written: number formatters (percent, spreads, p-values, the missing mark),
tables as aligned GitHub markdown, LaTeX (booktabs) and CSV, file-name slugs and one-line messages.

Light on purpose (pandas only): `msl-study status` and `msl-study compare` print with it too.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

MISSING = "–"


def percent(value: float) -> str:
    return MISSING if is_missing(value) else f"{100 * value:.1f}"


def percent_spread(mean: float, std: float) -> str:
    return percent(mean) if is_missing(std) else f"{percent(mean)} ± {100 * std:.1f}"


def signed_percent(value: float) -> str:
    return MISSING if is_missing(value) else f"{100 * value:+.1f}"


def paper_number(value: float | None) -> str:
    return MISSING if is_missing(value) else f"{value:.1f}"


def p_value_text(value: float) -> str:
    return MISSING if is_missing(value) else "<0.001" if value < 0.001 else f"{value:.3f}"


def plain(value: float, digits: int = 2) -> str:
    return MISSING if is_missing(value) else f"{value:.{digits}f}"


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _right_aligned(frame: pd.DataFrame) -> list[bool]:
    """Per column: right-align a column of numbers (possibly with ±, brackets, signs or the missing mark)."""

    def numeric(cells: pd.Series) -> bool:
        return len(cells) > 0 and all(
            re.match(r"^[\[(<+\-]?\s*\d", cell) or cell == MISSING for cell in cells
        )

    return [numeric(frame[column].astype(str)) for column in frame.columns]


def markdown_table(frame: pd.DataFrame) -> str:
    """An aligned GitHub markdown table of string cells: numbers right-aligned, text left-aligned."""
    header = [str(column) for column in frame.columns]
    body = [[str(cell).replace("|", "\\|").replace("\n", " ") for cell in row] for row in frame.to_numpy()]
    right = _right_aligned(frame)
    widths = [max([len(name), 3, *(len(row[i]) for row in body)]) for i, name in enumerate(header)]

    def line(cells: list[str]) -> str:
        padded = (
            cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(cells, widths, right, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rules = ("-" * (w + 1) + ":" if r else ":" + "-" * (w + 1) for w, r in zip(widths, right, strict=True))
    return "\n".join([line(header), "|" + "|".join(rules) + "|", *(line(row) for row in body)])


def latex_table(frame: pd.DataFrame) -> str:
    """The same table for LaTeX (booktabs), special characters escaped."""
    alignment = "".join("r" if right else "l" for right in _right_aligned(frame))
    return frame.to_latex(index=False, escape=True, column_format=alignment)


def slug(name: str) -> str:
    """A file-name-safe version of an experiment or parameter name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_table(folder: Path, name: str, numbers: pd.DataFrame, shown: pd.DataFrame) -> str:
    """`numbers` to `<folder>/<name>.csv`, `shown` (formatted strings) to `<name>.tex`; returns `shown` as
    markdown."""
    numbers.to_csv(folder / f"{name}.csv", index=False)
    (folder / f"{name}.tex").write_text(latex_table(shown))
    return markdown_table(shown)


def message_line(text, limit: int = 160) -> str:
    """The last non-empty line of a message (a traceback's exception line), shortened."""
    if not isinstance(text, str) or not text.strip():
        return MISSING
    line = [part for part in text.strip().splitlines() if part.strip()][-1].strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"
