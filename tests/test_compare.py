"""`msl-study compare` on two fake studies (the same recipe before and after a change): rows and numbers
against means computed here from the records written, never through the report's helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from study import layout
from study.cli import main
from study.compare import compare_tables, study_labels
from tests import fakes

SEEDS = (0, 1, 2)


def _study(root, name: str, bases: dict[str, float], experiments=("main",)) -> dict:
    """A study whose experiments run `bases`' variants on SEEDS; returns the oracle mIoU at each trial's pick
    by its objective source_val_miou (max): {(experiment, variant): {seed: value}}."""
    study = root / name
    layout.write_json(study / layout.STUDY_FILE, {"name": name, "experiments": list(experiments)})
    picked = {}
    for experiment in experiments:
        plan = fakes.plan(
            experiment,
            metric="source_val_miou",
            mode="max",
            variants=list(bases),
            seeds=list(SEEDS),
            searched={},
            scheduler="fifo",
            num_trials=len(bases) * len(SEEDS),
        )
        layout.write_plan(study, plan)
        for variant, base in bases.items():
            for seed in SEEDS:
                # source val peaks at iteration 20, where the target mIoU is base + 0.01 * seed + 0.02
                oracles = [base + 0.01 * seed + gain for gain in (0.0, 0.02, 0.03)]
                records = [
                    fakes.record(it, oracle, source_val, 0.7)
                    for it, oracle, source_val in zip((10, 20, 30), oracles, (0.5, 0.7, 0.6), strict=True)
                ]
                trial = f"{variant}_s{seed}"
                fakes.write_trial(
                    study,
                    experiment,
                    trial,
                    variant=variant,
                    seed=seed,
                    params={},
                    status=fakes.finished(),
                    records=records,
                )
                picked.setdefault((experiment, variant), {})[seed] = oracles[1]
    return picked


def test_compare_puts_each_variant_of_every_study_on_adjacent_rows_with_the_reports_numbers(tmp_path):
    before = _study(tmp_path, "before", {"source_only": 0.30, "maxsquare": 0.36})
    after = _study(
        tmp_path,
        "after",
        {"source_only": 0.30, "maxsquare": 0.40, "hard": 0.38},
        experiments=("main", "extra"),
    )
    tables, left_out = compare_tables([tmp_path / "before", tmp_path / "after"])
    assert list(tables) == ["main", "extra"] and left_out == {}
    numbers, shown = tables["main"]
    assert list(zip(numbers["variant"], numbers["study"], strict=True)) == [
        ("source_only", "before"),
        ("source_only", "after"),
        ("maxsquare", "before"),
        ("maxsquare", "after"),
        ("hard", "after"),
    ]
    for row in numbers.itertuples():
        picks = (before if row.study == "before" else after)["main", row.variant]
        values = np.array([picks[seed] for seed in SEEDS])
        assert row.mean == pytest.approx(100 * values.mean())
        assert row.std == pytest.approx(100 * values.std(ddof=1))
        assert row.n_seeds == len(SEEDS)
    maxsquare = numbers.set_index(["variant", "study"])["change"]
    assert maxsquare["maxsquare", "after"] == pytest.approx(100 * (0.40 - 0.30))
    # The report's columns, led by the study; the shown cells are the report's formatting.
    assert list(shown.columns[:4]) == ["variant", "study", "seeds", "mIoU selected"]
    assert "change vs source_only" in shown.columns and "p (paired t)" in shown.columns
    assert shown.loc[3, "mIoU selected"] == f"{100 * (0.40 + 0.03):.1f} ± 1.0"
    assert list(tables["extra"][1]["study"]) == ["after"] * 3


def test_study_labels_are_paths_where_folder_names_repeat(tmp_path, monkeypatch):
    paths = [tmp_path / "a" / "quick", tmp_path / "b" / "quick"]
    assert study_labels(paths) == [str(path) for path in paths]
    assert study_labels([tmp_path / "x", tmp_path / "y"]) == ["x", "y"]
    (tmp_path / "a" / "quick").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "quick")
    # "." is the folder it names; two spellings of one folder name differ only as absolute paths.
    assert study_labels([Path("."), tmp_path / "y"]) == ["quick", "y"]
    assert study_labels([Path("."), tmp_path / "b" / "quick"]) == [".", str(tmp_path / "b" / "quick")]
    with pytest.raises(ValueError, match="a study is given twice"):
        study_labels([Path("."), Path(".")])


def test_compare_names_each_study_it_leaves_out_and_fails_when_none_is_left(tmp_path, capsys):
    _study(tmp_path, "done", {"source_only": 0.3, "maxsquare": 0.35})
    layout.write_json(tmp_path / "new" / layout.STUDY_FILE, {"name": "new", "experiments": ["main"]})
    _study(tmp_path, "broken", {"source_only": 0.3})
    (layout.experiment_dir(tmp_path / "broken", "main") / layout.PLAN_FILE).write_text("{")
    studies = [str(tmp_path / name) for name in ("done", "new", "broken")]
    assert main(["compare", *studies]) == 0
    out = capsys.readouterr().out
    assert "Not compared: new: no experiment started yet." in out
    assert "Not compared: broken: cannot be read: " in out and "| maxsquare   | done" in out
    assert main(["compare", *studies[1:]]) == 1
    out = capsys.readouterr().out
    assert "Not compared: new" in out and "Not compared: broken" in out and "## Experiment" not in out


def test_cli_compares_and_names_the_directory_that_is_not_a_study(tmp_path, capsys):
    _study(tmp_path, "one", {"source_only": 0.3, "maxsquare": 0.35})
    _study(tmp_path, "two", {"source_only": 0.3, "maxsquare": 0.37})
    assert main(["compare", str(tmp_path / "one"), str(tmp_path / "two")]) == 0
    out = capsys.readouterr().out
    assert "## Experiment `main`" in out and "| maxsquare   | two   |" in out
    assert main(["compare", str(tmp_path / "one"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"msl-study: error: {tmp_path} is not a study directory (no {layout.STUDY_FILE})"
