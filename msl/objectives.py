"""The metrics a run reports after each evaluation and which direction of each is better: what every reader
of results needs (selection, status, the report), kept free of torch so that `msl-study status` starts fast.
`msl.config` checks configs against them.
"""

from __future__ import annotations

import math

# The label-free validators the trainer computes on target training images (msl.evaluate, in this order), and
# which direction is better.
VALIDATOR_MODES = {
    "target_entropy": "min",
    "target_im": "min",
    "target_max_square": "max",
    "target_snd": "max",
    "target_bnm": "max",
}
# Every metric a run reports after each evaluation, and which direction is better. `oracle_*` metrics read the
# target val labels (the test set): selecting on them is an oracle that must be asked for by name.
METRIC_MODES = {
    "source_val_miou": "max",
    "oracle_miou": "max",
    "oracle_miou16": "max",
    "oracle_miou13": "max",
    **VALIDATOR_MODES,
}
MODES = ("max", "min")


def is_oracle(metric: str) -> bool:
    """Whether a metric reads the target val labels (the test set)."""
    return metric.startswith("oracle_")


LABEL_FREE_METRICS = tuple(metric for metric in METRIC_MODES if not is_oracle(metric))
# Validators that need the predictions of several checkpoints on the same images: study.selection computes
# them from the softmax maps every evaluation saves, after an experiment ends (no trial reports them).
STUDY_VALIDATORS = {"ensemble_agreement": "max", "seed_disagreement": "min"}
# Everything that may select without the target labels, and which direction is better.
LABEL_FREE_MODES = {**{metric: METRIC_MODES[metric] for metric in LABEL_FREE_METRICS}, **STUDY_VALIDATORS}


def metric_mode(metric: str, mode: str | None = None) -> str | None:
    """The direction a metric is selected in: `mode` when given, else the metric's own (None for a name that
    is neither a metric nor a study-level validator)."""
    return mode or METRIC_MODES.get(metric) or STUDY_VALIDATORS.get(metric)


def oriented(value, mode: str):
    """`value` (a number, an array or a Series) signed so that higher is better under `mode`."""
    return value if mode == "max" else -value


def is_better(value: float | None, best: float | None, mode: str) -> bool:
    """Whether `value` beats `best` under `mode` (one of MODES). A missing value (None or NaN) never wins, any
    value beats a missing best, and a tie keeps `best` (the earlier checkpoint or trial)."""
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best if mode == "max" else value < best
