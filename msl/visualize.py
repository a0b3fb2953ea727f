"""Labels in the Cityscapes colours, for TensorBoard and saved predictions."""

from __future__ import annotations

import torch
from torch import Tensor

from msl.labels import IGNORE_INDEX, NUM_CLASSES_CHOICES, palette


def colourise(label: Tensor, num_classes: int) -> Tensor:
    """Class indices `(H, W)` to Cityscapes colours `(3, H, W)` uint8; ignored pixels are black."""
    colours = torch.zeros(256, 3, dtype=torch.uint8)
    if num_classes in NUM_CLASSES_CHOICES:
        colours[:num_classes] = torch.from_numpy(palette(num_classes))
    colours[IGNORE_INDEX] = 0
    return colours[label.long().clamp(0, 255)].permute(2, 0, 1)
