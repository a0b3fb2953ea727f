"""The report's table formats (study.tables), against tables written out by hand."""

from __future__ import annotations

import math

import pandas as pd

from study.tables import MISSING, markdown_table, message_line, percent, percent_spread, slug, write_table


def test_numbers_are_right_aligned_and_text_left_aligned_in_markdown():
    frame = pd.DataFrame({"variant": ["maxsquare", "hard"], "mIoU": ["42.0 ± 1.2", MISSING]})
    assert markdown_table(frame).splitlines() == [
        "| variant   |       mIoU |",
        "|:----------|-----------:|",
        "| maxsquare | 42.0 ± 1.2 |",
        "| hard      |          – |",
    ]


def test_formatters_and_one_line_messages():
    assert (percent(0.4234), percent(math.nan), percent_spread(0.42, 0.012)) == (
        "42.3",
        MISSING,
        "42.0 ± 1.2",
    )
    assert slug("sweep/a b") == "sweep_a_b"
    assert (
        message_line("Traceback (most recent call last):\n  File 'x'\nValueError: bad\n\n")
        == "ValueError: bad"
    )
    assert message_line(None) == MISSING and len(message_line("x" * 500)) == 160


def test_a_table_is_written_as_csv_and_tex_and_returned_as_markdown(tmp_path):
    numbers = pd.DataFrame({"variant": ["hard"], "mean": [42.04]})
    shown = pd.DataFrame({"variant": ["hard"], "mean": ["42.0"]})
    markdown = write_table(tmp_path, "t", numbers, shown)
    assert pd.read_csv(tmp_path / "t.csv").equals(numbers)
    assert "hard & 42.0" in (tmp_path / "t.tex").read_text() and markdown == markdown_table(shown)
