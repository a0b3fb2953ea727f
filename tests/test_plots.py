"""study/plots.py: what each figure draws, read back from matplotlib's artists (scatter offsets, line data,
band vertices, axis scales and tick labels) against the frames given, and every figure renders to a PNG."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.collections import PathCollection, PolyCollection
from PIL import Image

from study.plots import (
    budget_curve,
    is_percent,
    learning_curves,
    sensitivity,
    validator_scatter,
    variant_colors,
)

COLORS = variant_colors(["maxsquare", "entropy"])


def _renders(figure) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    width, height = Image.open(io.BytesIO(buffer.getvalue())).size
    assert width > 100 and height > 100


def _scatters(axis) -> dict[str, PathCollection]:
    return {c.get_label(): c for c in axis.collections if isinstance(c, PathCollection)}


def test_percent_metrics_and_one_fixed_colour_per_variant():
    assert [is_percent(m) for m in ("oracle_miou", "oracle_miou13", "source_val_miou", "target_im")] == [
        True,
        True,
        True,
        False,
    ]
    colors = variant_colors([f"v{i}" for i in range(12)])
    assert colors["v0"] == colors["v10"] != colors["v1"]  # tab10 cycles after ten variants
    assert variant_colors(["maxsquare", "entropy"]) == COLORS


POINTS = pd.DataFrame(
    {
        "variant": ["maxsquare", "maxsquare", "entropy"],
        "loss.lambda_target": [0.01, 0.1, 1.0],
        "value": [0.40, 0.42, 0.38],
        "stopped": [False, True, False],
    }
)


def test_sensitivity_plots_each_trial_in_percent_stopped_ones_hollow():
    figure = sensitivity(POINTS, "loss.lambda_target", COLORS, log=True, xlabel="lambda", title="t")
    (axis,) = figure.axes
    assert axis.get_xscale() == "log" and axis.get_xlabel() == "lambda"
    scatters = _scatters(axis)
    assert set(scatters) == {"maxsquare", "maxsquare (stopped)", "entropy"}
    np.testing.assert_allclose(scatters["maxsquare"].get_offsets(), [[0.01, 40.0]])
    np.testing.assert_allclose(scatters["maxsquare (stopped)"].get_offsets(), [[0.1, 42.0]])
    assert len(scatters["maxsquare (stopped)"].get_facecolors()) == 0  # hollow
    np.testing.assert_allclose(scatters["entropy"].get_facecolors()[0], COLORS["entropy"])
    _renders(figure)


def test_sensitivity_spaces_non_numeric_choices_evenly_in_sorted_order():
    points = POINTS.assign(crop=[[64, 32], [128, 64], [64, 32]])
    figure = sensitivity(points, "crop", COLORS, log=True, xlabel="crop", title="t")
    (axis,) = figure.axes
    assert axis.get_xscale() == "linear"  # log makes no sense for categories
    assert [label.get_text() for label in axis.get_xticklabels()] == ["[128, 64]", "[64, 32]"]
    np.testing.assert_allclose(_scatters(axis)["maxsquare"].get_offsets(), [[1, 40.0]])
    np.testing.assert_allclose(_scatters(axis)["maxsquare (stopped)"].get_offsets(), [[0, 42.0]])


def test_validator_scatter_has_a_panel_per_validator_in_its_own_units():
    evals = pd.DataFrame(
        {
            "variant": ["maxsquare", "entropy", "maxsquare"],
            "target_im": [0.5, 0.7, 0.6],
            "source_val_miou": [0.61, 0.58, 0.63],
            "oracle_miou": [0.40, 0.38, 0.42],
        }
    )
    figure = validator_scatter(evals, ["target_im", "source_val_miou"], "oracle_miou", COLORS)
    visible = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_xlabel() for axis in visible] == ["target_im", "source_val_miou (%)"]
    np.testing.assert_allclose(_scatters(visible[0])["maxsquare"].get_offsets(), [[0.5, 40.0], [0.6, 42.0]])
    np.testing.assert_allclose(_scatters(visible[1])["entropy"].get_offsets(), [[58.0, 38.0]])
    _renders(figure)


def test_budget_curve_steps_the_best_so_far_against_trial_iterations():
    curve = pd.DataFrame(
        {
            "trial_iterations": [10, 30, 60],
            "best_objective": [0.9, 0.8, 0.8],
            "pick_target": [0.35, 0.40, 0.40],
            "best_target": [0.35, 0.41, 0.43],
        }
    )
    figure = budget_curve(curve, "target_entropy")
    left, right = figure.axes
    (objective,) = left.get_lines()
    np.testing.assert_allclose(objective.get_xydata(), [[10, 0.9], [30, 0.8], [60, 0.8]])
    assert objective.get_drawstyle() == "steps-post"
    pick, best = right.get_lines()
    np.testing.assert_allclose(pick.get_ydata(), [35.0, 40.0, 40.0])
    np.testing.assert_allclose(best.get_ydata(), [35.0, 41.0, 43.0])
    assert best.get_linestyle() == "--"
    _renders(figure)


def test_learning_curves_draw_the_mean_with_a_band_of_one_deviation():
    curves = pd.DataFrame(
        {
            "variant": ["maxsquare"] * 3 + ["entropy"] * 3,
            "metric": ["oracle_miou"] * 6,
            "iteration": [10, 20, 30] * 2,
            "mean": [0.30, 0.35, 0.40, 0.28, 0.30, 0.31],
            "std": [0.01, 0.02, np.nan, 0.0, 0.01, 0.01],  # NaN: one seed, no band
        }
    )
    figure = learning_curves(curves, ["oracle_miou"], COLORS)
    (axis,) = figure.axes
    lines = {line.get_label(): line for line in axis.get_lines()}
    np.testing.assert_allclose(lines["maxsquare"].get_ydata(), [30.0, 35.0, 40.0])
    bands = [c for c in axis.collections if isinstance(c, PolyCollection)]
    vertices = bands[0].get_paths()[0].vertices  # maxsquare's band, drawn first
    edges = {x: sorted({round(y, 6) for vx, y in vertices if vx == x}) for x in (10, 20, 30)}
    assert edges == {10: [29.0, 31.0], 20: [33.0, 37.0], 30: [40.0]}
    _renders(figure)
