"""Segmentation metrics from a confusion matrix accumulated on the model's device (docs/metrics.md §6.1).

`ConfusionMatrix` counts CM[gt, pred] batch by batch without reading anything back to the host, so an
evaluation loop never stalls the GPU (docs/reference-quirks.md §10.9); `compute()` does the one device-to-host
copy at the end and returns plain Python numbers (JSON-ready). The formulas and NaN rules are the reference's:

* pixel_acc = trace(CM) / sum(CM) (0.0 with a warning when nothing was counted);
* mean_acc  = nan-mean over classes of CM[c, c] / rowsum_c (classes absent from the ground truth are left
  out);
* iou_c     = CM[c, c] / (rowsum_c + colsum_c - CM[c, c]): NaN for a class absent from both ground truth and
  prediction (left out of the mean), 0 for a class only predicted (counted); miou = nan-mean of iou;
* fwiou     = sum over classes with a defined IoU of rowsum_c * iou_c, divided by sum(CM);
* precision = nan-mean over classes of CM[c, c] / colsum_c.

Class subsets (docs/metrics.md §6.1) come from the same matrix: a 19-class matrix also reports `miou16` and
`miou13` (IoU of the SYNTHIA and CrossCity classes, nan-mean); a 16-class (SYNTHIA) matrix reports `miou13`
and `fwiou13`, the reference's "mIoU*" that it treats as *the* mIoU of a 16-class model. `fwiou13` keeps the
reference's quirk of dividing by the pixel count of all 16 classes (not only the 13 kept), so our numbers stay
comparable with the paper's logs; it is therefore not a frequency-weighted IoU of a 13-class problem.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from msl.labels import IGNORE_INDEX, NUM_CLASSES_CHOICES, SUBSET_13_IN_16, SUBSET_TRAIN_IDS, class_names

# Extra mean-IoU keys reported for a matrix of a given size: key -> class indices of that matrix.
_MIOU_SUBSETS: dict[int, dict[str, tuple[int, ...]]] = {
    19: {"miou16": SUBSET_TRAIN_IDS[16], "miou13": SUBSET_TRAIN_IDS[13]},
    16: {"miou13": SUBSET_13_IN_16},
}
# Frequency-weighted IoU over a subset, divided by the pixel count of the whole matrix (the reference's
# quirk).
_FWIOU_SUBSETS: dict[int, dict[str, tuple[int, ...]]] = {16: {"fwiou13": SUBSET_13_IN_16}}


def predicted_classes(scores: torch.Tensor) -> torch.Tensor:
    """Index of the highest score along dim 1, `(B, H, W)` for scores `(B, C, H, W)`; the first index on ties.

    Same result as `scores.argmax(dim=1)`, but `max(dim=1).indices` is ~3x faster on the CPU (one thread,
    (4, 19, 64, 128): 3.7 ms against 11.6 ms, torch 2.14, 2026-11-26), which the CPU quickstart feels.
    """
    return scores.max(dim=1).indices


def metric_class_names(num_classes: int) -> list[str]:
    """Class names of a protocol (19/16/13 classes), or `class_0`, `class_1`, ... for any other class
    count."""
    if num_classes in NUM_CLASSES_CHOICES:
        return class_names(num_classes)
    return [f"class_{index}" for index in range(num_classes)]


class ConfusionMatrix:
    """Running confusion matrix CM[gt, pred] of a C-class segmentation problem, kept on one device.

    Pixels whose target is `ignore_index` or outside 0..C-1 count for nothing. Predictions are expected to be
    class indices 0..C-1 (an argmax); a pixel with a prediction outside that range is dropped as well, because
    checking for it would need a host synchronisation.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: torch.device | str | None = None
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)  # (C, C)

    @property
    def matrix(self) -> torch.Tensor:
        """The accumulated `(C, C)` int64 counts, rows = ground truth, columns = prediction (the live tensor,
        so e.g. `torch.distributed.all_reduce(cm.matrix)` sums it across processes in place)."""
        return self._matrix

    @property
    def device(self) -> torch.device:
        return self._matrix.device

    def reset(self) -> None:
        """Forget all counts (e.g. before the next validation pass)."""
        self._matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add the pixels of integer class maps `pred` and `target` of any equal shape, e.g. `(B, H, W)`.

        Tensors on another device are moved to the matrix's device. The counts are added with `index_add_`
        into the flattened matrix rather than `torch.bincount`, because CUDA's bincount reads the input's min
        and max back to the host to size its output (two synchronisations per call); the matrix's size is
        known here.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target must have the same shape, got pred {tuple(pred.shape)} "
                f"and target {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(
                f"pred and target must be integer class maps, got {pred.dtype} and {target.dtype}"
            )
        num_classes = self.num_classes
        pred = pred.to(device=self.device, dtype=torch.int64).reshape(-1)  # (N,)
        target = target.to(device=self.device, dtype=torch.int64).reshape(-1)  # (N,)
        counted = (target != self.ignore_index) & (target >= 0) & (target < num_classes)  # (N,)
        counted &= (pred >= 0) & (pred < num_classes)
        # Uncounted pixels add 0 to cell 0 instead of being filtered out (filtering has a data-dependent
        # size).
        cell = torch.where(counted, target * num_classes + pred, 0)  # (N,) flat index of CM[gt, pred]
        self._matrix.view(-1).index_add_(0, cell, counted.to(torch.int64))

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of another matrix of the same problem (e.g. from another process); returns self."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_index}) into a "
                f"{self.num_classes}-class one (ignore {self.ignore_index})"
            )
        self._matrix += other.matrix.to(self.device)
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def compute(self) -> dict[str, Any]:
        """All metrics of the counts so far (see the module docstring), as Python floats and lists of floats.

        Keys: `class_names`, `pixel_acc`, `mean_acc`, `iou` (per class), `miou`, `fwiou`, `precision`, plus
        `miou16`, `miou13` for 19 classes and `miou13`, `fwiou13` for 16 classes.
        """
        return confusion_metrics(self._matrix)


def _nanmean(values: torch.Tensor) -> float:
    """Mean of the non-NaN entries; NaN when all are NaN."""
    return values.nanmean().item()


def confusion_metrics(matrix: torch.Tensor) -> dict[str, Any]:
    """Metrics of a `(C, C)` confusion matrix CM[gt, pred] on any device (see the module docstring)."""
    counts = matrix.detach().to(device="cpu", dtype=torch.float64)  # (C, C)
    num_classes = counts.shape[0]
    true_positives = counts.diagonal()  # (C,)
    gt_pixels = counts.sum(dim=1)  # (C,) row sums
    predicted_pixels = counts.sum(dim=0)  # (C,) column sums
    total = counts.sum().item()
    # Divisions by zero give NaN (0/0) exactly where the reference's numpy code gives NaN.
    class_acc = true_positives / gt_pixels  # (C,)
    class_precision = true_positives / predicted_pixels  # (C,)
    iou = true_positives / (gt_pixels + predicted_pixels - true_positives)  # (C,)
    weighted_iou = (gt_pixels * iou).nan_to_num(nan=0.0)  # (C,) classes with an undefined IoU count 0

    if total == 0:
        warnings.warn("confusion matrix is empty: pixel accuracy reported as 0", RuntimeWarning, stacklevel=3)
    result: dict[str, Any] = {
        "class_names": metric_class_names(num_classes),
        "pixel_acc": true_positives.sum().item() / total if total else 0.0,
        "mean_acc": _nanmean(class_acc),
        "iou": iou.tolist(),
        "miou": _nanmean(iou),
        "fwiou": weighted_iou.sum().item() / total if total else math.nan,
        "precision": _nanmean(class_precision),
    }
    for key, indices in _MIOU_SUBSETS.get(num_classes, {}).items():
        result[key] = _nanmean(iou[list(indices)])
    for key, indices in _FWIOU_SUBSETS.get(num_classes, {}).items():
        result[key] = weighted_iou[list(indices)].sum().item() / total if total else math.nan
    return result


def format_table(result: dict[str, Any]) -> str:
    """Aligned text table of the per-class IoU of a `compute()` result and its mean IoU(s), in percent.

    Undefined values (a class absent from ground truth and prediction) print as `n/a`.
    """
    class_rows = list(zip(result["class_names"], result["iou"], strict=True))
    mean_rows = [(key.replace("miou", "mIoU"), result[key]) for key in result if key.startswith("miou")]
    width = max(len(name) for name, _ in [("class", 0.0), *class_rows, *mean_rows])

    def line(name: str, value: float) -> str:
        shown = "n/a" if math.isnan(value) else f"{100.0 * value:.2f}"
        return f"{name:<{width}}  {shown:>6}"

    header = f"{'class':<{width}}  {'IoU %':>6}"
    rule = "-" * len(header)
    return "\n".join(
        [header, rule, *(line(*row) for row in class_rows), rule, *(line(*row) for row in mean_rows)]
    )
