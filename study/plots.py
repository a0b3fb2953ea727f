"""The report's figures, drawn with matplotlib's object API (no pyplot state, so no display is ever needed).

Every function takes tidy pandas frames the report has already computed and returns a `Figure`; the report
saves it as PNG. Metrics ending in `miou` are shown in percent, validators in their own units.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

PANEL_SIZE = (4.2, 3.2)  # inches per subplot


def is_percent(metric: str) -> bool:
    """mIoU-like metrics are stored as fractions and shown in percent."""
    return metric.endswith("miou") or metric.endswith("miou13") or metric.endswith("miou16")


def metric_label(metric: str) -> str:
    return f"{metric} (%)" if is_percent(metric) else metric


def variant_colors(variants: list[str]) -> dict[str, tuple]:
    """One fixed colour per variant, so a variant looks the same in every figure of a report."""
    palette = colormaps["tab10"]
    return {variant: palette(index % 10) for index, variant in enumerate(variants)}


def _panels(count: int, columns: int = 3) -> tuple[Figure, list]:
    columns = min(columns, max(count, 1))
    rows = -(-max(count, 1) // columns)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for unused in axes[count:]:
        unused.set_visible(False)
    return figure, axes[:count]


def sensitivity(
    points: pd.DataFrame, x: str, colors: dict[str, tuple], *, log: bool, xlabel: str, title: str
) -> Figure:
    """Target mIoU (%) of each trial (column `value`) against one parameter (column `x`), one colour per
    variant; stopped trials (column `stopped`) hollow, since they ran fewer iterations."""
    figure, (axis,) = _panels(1)
    numeric = pd.to_numeric(points[x], errors="coerce")
    categorical = numeric.isna().any()
    if categorical:  # choices that are not numbers (e.g. crop sizes): evenly spaced, in sorted order
        labels = points[x].map(str)
        order = sorted(labels.unique())
        numeric = labels.map({label: position for position, label in enumerate(order)})
        axis.set_xticks(range(len(order)), order, rotation=30, ha="right")
    elif log:
        axis.set_xscale("log")
    for variant, group in points.groupby("variant", sort=False):
        for stopped, subset in group.groupby("stopped"):
            axis.scatter(
                numeric[subset.index],
                100 * subset["value"],
                s=28,
                label=f"{variant} (stopped)" if stopped else variant,
                facecolors="none" if stopped else colors[variant],
                edgecolors=colors[variant],
            )
    axis.set_xlabel(xlabel)
    axis.set_ylabel("target mIoU (%)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return figure


def validator_scatter(
    evals: pd.DataFrame, validators: list[str], target: str, colors: dict[str, tuple]
) -> Figure:
    """Each validator against the target mIoU over every evaluation, one colour per variant: the picture
    behind the rank correlations."""
    figure, axes = _panels(len(validators))
    for axis, validator in zip(axes, validators, strict=True):
        scale = 100 if is_percent(validator) else 1
        for variant, group in evals.groupby("variant", sort=False):
            axis.scatter(
                scale * group[validator],
                100 * group[target],
                s=10,
                alpha=0.7,
                color=colors[variant],
                label=variant,
            )
        axis.set_xlabel(metric_label(validator))
        axis.set_ylabel(f"{target} (%)")
        axis.grid(alpha=0.3)
    if axes:
        axes[0].legend(fontsize=7)
    return figure


def budget_curve(curve: pd.DataFrame, objective: str) -> Figure:
    """Best-so-far objective, and the target mIoU of the objective's best-so-far pick (with the best target
    mIoU seen so far, which only an oracle could pick), against cumulative trial-iterations."""
    figure, (left, right) = _panels(2, columns=2)
    scale = 100 if is_percent(objective) else 1
    left.step(curve["trial_iterations"], scale * curve["best_objective"], where="post")
    left.set_ylabel(f"best {metric_label(objective)} so far")
    right.step(curve["trial_iterations"], 100 * curve["pick_target"], where="post", label="objective's pick")
    right.step(
        curve["trial_iterations"],
        100 * curve["best_target"],
        where="post",
        linestyle="--",
        label="best seen (oracle)",
    )
    right.set_ylabel("target mIoU (%)")
    right.legend(fontsize=7)
    for axis in (left, right):
        axis.set_xlabel("cumulative trial-iterations")
        axis.grid(alpha=0.3)
    return figure


def learning_curves(curves: pd.DataFrame, metrics: list[str], colors: dict[str, tuple]) -> Figure:
    """Per metric, the mean over seeds against iteration for each variant, with a band of +-1 standard
    deviation (`curves` columns: variant, metric, iteration, mean, std)."""
    figure, axes = _panels(len(metrics))
    for axis, metric in zip(axes, metrics, strict=True):
        scale = 100 if is_percent(metric) else 1
        for variant, group in curves[curves["metric"] == metric].groupby("variant", sort=False):
            mean, std = scale * group["mean"].to_numpy(), scale * np.nan_to_num(group["std"].to_numpy())
            axis.plot(group["iteration"], mean, color=colors[variant], label=variant)
            axis.fill_between(group["iteration"], mean - std, mean + std, color=colors[variant], alpha=0.2)
        axis.set_xlabel("iteration")
        axis.set_ylabel(metric_label(metric))
        axis.grid(alpha=0.3)
    if axes:
        axes[0].legend(fontsize=7)
    return figure
