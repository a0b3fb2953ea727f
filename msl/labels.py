"""Label conventions shared by datasets, metrics, models and reports.

The Cityscapes definitions (label ids, train ids, names, colours) come from cityscapesscripts; only the
class subsets of the SYNTHIA (16 classes) and NTHU CrossCity (13 classes) protocols are ours
(docs/datasets.md §5.2, docs/metrics.md §6.1). Train ids are 0..C-1 and IGNORE_INDEX marks pixels that count
for nothing.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

IGNORE_INDEX = 255
DATASET_NAMES = ("gta5", "synthia", "cityscapes", "crosscity")  # their file formats: msl.data.formats
NUM_CLASSES_CHOICES = (19, 16, 13)  # the Cityscapes classes, SYNTHIA's 16, CrossCity's 13

# The 19 evaluated Cityscapes classes, indexed by train id.
_TRAIN_LABELS = sorted((l for l in _CITYSCAPES_LABELS if 0 <= l.trainId < 19), key=lambda l: l.trainId)

# Which 19-class train ids each protocol keeps, in the order of its own class indices.
SUBSET_TRAIN_IDS: dict[int, tuple[int, ...]] = {
    19: tuple(range(19)),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),  # SYNTHIA: no terrain, truck, train
    13: (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),  # CrossCity: no wall, fence, pole either
}
# The 13 classes expressed as indices of the 16-class space (the reference's "mIoU*" of SYNTHIA).
SUBSET_13_IN_16: tuple[int, ...] = tuple(SUBSET_TRAIN_IDS[16].index(t) for t in SUBSET_TRAIN_IDS[13])


def check_num_classes(num_classes: int) -> None:
    if num_classes not in NUM_CLASSES_CHOICES:
        raise ValueError(f"num_classes must be one of {NUM_CLASSES_CHOICES}, got {num_classes}")


def class_names(num_classes: int = 19) -> list[str]:
    """Names of the classes of a protocol, indexed by its class index (e.g. 'traffic light')."""
    check_num_classes(num_classes)
    return [_TRAIN_LABELS[t].name for t in SUBSET_TRAIN_IDS[num_classes]]


def palette(num_classes: int = 19) -> np.ndarray:
    """Cityscapes colours `(C, 3)` uint8 for a protocol's class indices (each class keeps its own colour)."""
    check_num_classes(num_classes)
    return np.array([_TRAIN_LABELS[t].color for t in SUBSET_TRAIN_IDS[num_classes]], dtype=np.uint8)


def label_id_to_class_lut(num_classes: int = 19) -> np.ndarray:
    """Lookup table `(256,)` uint8 from Cityscapes label ids to a protocol's class index, IGNORE_INDEX
    elsewhere."""
    check_num_classes(num_classes)
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for index, train_id in enumerate(SUBSET_TRAIN_IDS[num_classes]):
        lut[_TRAIN_LABELS[train_id].id] = index
    return lut


def class_to_label_id(num_classes: int = 19) -> np.ndarray:
    """Cityscapes label id `(C,)` uint8 of each class index: the encoding of official submission PNGs."""
    check_num_classes(num_classes)
    return np.array([_TRAIN_LABELS[t].id for t in SUBSET_TRAIN_IDS[num_classes]], dtype=np.uint8)
