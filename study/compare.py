"""`msl-study compare DIR DIR...`: the variant tables (report section 1) of several studies side by side.

Experiments are matched by name. Each gets one table whose rows are its variants, each variant once per study
that ran it (grouped, so that the same recipe before and after a change sits on adjacent rows), with the
report's columns (`study.report.variant_table`) and a leading `study` column. A column one study lacks (no
baseline, no paper numbers) shows the missing mark. Studies are labelled by folder name, or by path where
names repeat. A study that adds no row (unreadable, or without a finished trial) is named with why; when no
study adds one, the command fails.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from study import layout
from study.decide import select, variants_of
from study.report import variant_table
from study.results import load_study
from study.tables import MISSING, markdown_table

Part = tuple[str, pd.DataFrame, pd.DataFrame, list[str]]  # study label, numbers, shown, its variants in order


def compare_tables(
    studies: list[str | Path],
) -> tuple[dict[str, tuple[pd.DataFrame, pd.DataFrame]], dict[str, str]]:
    """Experiment name -> (numbers, shown) over every study that has it, in the order the studies are given;
    and study label -> why it is in no table (unreadable, or no experiment with a finished trial). Every
    directory is checked before any is read: the first that is not a study is the one error."""
    paths = [layout.require_study(Path(study)) for study in studies]
    tables: dict[str, list[Part]] = {}
    left_out: dict[str, str] = {}
    for label, path in zip(study_labels(paths), paths, strict=True):
        try:
            experiments = load_study(path).experiments()
        except (OSError, ValueError, KeyError) as error:  # a damaged or half-written file of the study
            left_out[label] = f"cannot be read: {error}"
            continue
        compared = 0
        for exp in experiments:
            numbers, shown = variant_table(exp, select(exp))
            if len(numbers):
                tables.setdefault(exp.name, []).append((label, numbers, shown, variants_of(exp)))
                compared += 1
        if not compared:
            started = ", ".join(exp.name for exp in experiments)
            left_out[label] = (
                f"no finished trial yet in its experiments ({started})"
                if started
                else "no experiment started yet"
            )
    return {name: _side_by_side(parts) for name, parts in tables.items()}, left_out


def study_labels(paths: list[Path]) -> list[str]:
    """Short names of the studies: their folder names, or their paths where folder names repeat (as given,
    or absolute where even those repeat)."""
    for labels in (
        [path.resolve().name for path in paths],
        [str(path) for path in paths],
        [str(path.resolve()) for path in paths],
    ):
        if len(set(labels)) == len(labels):
            return labels
    raise ValueError(f"a study is given twice: {' '.join(map(str, paths))}")


def _side_by_side(parts: list[Part]) -> tuple[pd.DataFrame, pd.DataFrame]:
    variants = list(dict.fromkeys(variant for *_, order in parts for variant in order))
    variant_rank = {variant: i for i, variant in enumerate(variants)}
    study_rank = {label: i for i, (label, *_) in enumerate(parts)}

    def combine(frames: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
        frame = pd.concat([table.assign(study=label) for label, table in frames], ignore_index=True)
        key = frame["variant"].map(variant_rank) * len(parts) + frame["study"].map(study_rank)
        frame = frame.iloc[key.to_numpy().argsort(kind="stable")]
        columns = ["variant", "study", *(c for c in frame.columns if c not in ("variant", "study"))]
        return frame[columns].reset_index(drop=True)

    numbers = combine([(label, numbers) for label, numbers, _, _ in parts])
    shown = combine([(label, shown) for label, _, shown, _ in parts]).fillna(MISSING)
    return numbers, shown


def format_comparison(studies: list[str | Path]) -> tuple[str, bool]:
    """The comparison as text, and whether any study could be compared (the command fails otherwise); each
    study in no table is named with why."""
    tables, left_out = compare_tables(studies)
    lines = [f"Not compared: {label}: {why}." for label, why in left_out.items()]
    if not tables:
        return "\n".join([*lines, "No study here has a finished trial to compare."]), False
    lines += [
        "Variant tables (section 1 of each study's report): target mIoU (%) at the checkpoint each "
        "experiment's own objective picks, mean ± std over seeds; see each report for how rows were selected."
    ]
    for name, (_, shown) in tables.items():
        lines.extend(["", f"## Experiment `{name}`", "", markdown_table(shown)])
    return "\n".join(lines), True
