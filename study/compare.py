"""`msl-study compare DIR DIR...`: the variant tables (report section 1) of several studies side by side.

Experiments are matched by name. Each gets one table whose rows are its variants, each variant once per study
that ran it (grouped, so that the same recipe before and after a change sits on adjacent rows), with the
report's columns (`study.report.variant_table`) and a leading `study` column. A column one study lacks (no
baseline, no paper numbers) shows the missing mark.
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


def compare_tables(studies: list[str | Path]) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Experiment name -> (numbers, shown) over every study that has it, in the order the studies are given.
    Every directory is checked before any is read: the first that is not a study is the one error."""
    paths = [layout.require_study(Path(study)) for study in studies]
    tables: dict[str, list[Part]] = {}
    for label, path in zip(study_labels(paths), paths, strict=True):
        for exp in load_study(path).experiments():
            numbers, shown = variant_table(exp, select(exp))
            if len(numbers):
                tables.setdefault(exp.name, []).append((label, numbers, shown, variants_of(exp)))
    return {name: _side_by_side(parts) for name, parts in tables.items()}


def study_labels(paths: list[Path]) -> list[str]:
    """Short names of the studies: their folder names, or the paths as given where folder names repeat."""
    names = [path.name for path in paths]
    return names if len(set(names)) == len(names) else [str(path) for path in paths]


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


def format_comparison(studies: list[str | Path]) -> str:
    tables = compare_tables(studies)
    if not tables:
        return "No experiment with a plan in these studies yet."
    lines = [
        "Variant tables (section 1 of each study's report): target mIoU (%) at the checkpoint each "
        "experiment's own objective picks, mean ± std over seeds; see each report for how rows were selected."
    ]
    for name, (_, shown) in tables.items():
        lines.extend(["", f"## Experiment `{name}`", "", markdown_table(shown)])
    return "\n".join(lines)
