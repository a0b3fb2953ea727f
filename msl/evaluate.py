"""Evaluating a model: segmentation metrics on labelled data and label-free validators on unlabelled data.

Both accumulate on the model's device and read back once at the end. Predictions come from the main head,
optionally averaged with the horizontally flipped image's prediction (softmax averaged, as the reference's
`--flip`). Logits are upsampled to the label's size, so full-resolution labels are scored at full resolution.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msl.metrics import ConfusionMatrix, predicted_classes

VALIDATORS = ("target_entropy", "target_im", "target_max_square")  # directions: msl.config.METRIC_MODES


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked for; a no-op context on the CPU."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_probs(model: nn.Module, images: Tensor, size: tuple[int, int] | None = None, flip: bool = False) -> Tensor:
    """Softmax of the main head `(B, C, H, W)` at `size` (default: the input size), in float32."""
    logits = model(images)[0].float()  # (B, C, h, w)
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
    probs = logits.softmax(dim=1)
    if flip:
        flipped = predict_probs(model, images.flip(-1), size=size).flip(-1)
        probs = (probs + flipped) / 2
    return probs


def evaluate(model: nn.Module, batches: Iterable, num_classes: int, device: torch.device, *, flip: bool = False,
             bf16: bool = True, channels_last: bool = False,
             on_prediction: Callable[[Tensor, list[str]], None] | None = None) -> dict:
    """Metrics of `msl.metrics.ConfusionMatrix.compute` over batches of `(images, labels, names)`.

    `on_prediction(predictions (B, H, W), names)` sees every prediction (e.g. to save it as a PNG)."""
    model.eval()
    matrix = ConfusionMatrix(num_classes, device=device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, labels, names in batches:
        images = images.to(device, non_blocking=True, memory_format=memory_format)  # (B, 3, H, W)
        labels = labels.to(device, non_blocking=True)  # (B, H_label, W_label)
        with autocast(device, bf16):
            probs = predict_probs(model, images, size=tuple(labels.shape[-2:]), flip=flip)
        predictions = predicted_classes(probs)  # (B, H_label, W_label)
        matrix.update(predictions, labels)
        if on_prediction is not None:
            on_prediction(predictions, list(names))
    return matrix.compute()


def label_free_validators(model: nn.Module, images_batches: Iterable[Tensor], device: torch.device, *,
                          flip: bool = False, bf16: bool = True, channels_last: bool = False) -> dict[str, float]:
    """Validators computed from the predictions alone, over every pixel of the given images:

    * `target_entropy`: mean pixel entropy H(p) (nats);
    * `target_im`: information maximisation, mean H(p) minus the entropy of the mean prediction H(mean p):
      low when pixels are confident yet the classes stay diverse (lower is better);
    * `target_max_square`: mean of sum_c p_c^2 per pixel (higher is more confident).
    """
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    entropy_sum = square_sum = torch.zeros((), dtype=torch.float64, device=device)
    class_mass: Tensor | None = None  # (C,) summed probabilities
    pixels = 0
    for images in images_batches:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        with autocast(device, bf16):
            probs = predict_probs(model, images, flip=flip)  # (B, C, H, W)
        entropy_sum = entropy_sum + torch.special.entr(probs).sum(dtype=torch.float64)
        square_sum = square_sum + probs.square().sum(dtype=torch.float64)
        mass = probs.sum(dim=(0, 2, 3), dtype=torch.float64)  # (C,)
        class_mass = mass if class_mass is None else class_mass + mass
        pixels += probs.shape[0] * probs.shape[2] * probs.shape[3]
    if class_mass is None:
        return {name: math.nan for name in VALIDATORS}
    mean_entropy = (entropy_sum / pixels).item()
    marginal_entropy = torch.special.entr(class_mass / pixels).sum().item()
    return {
        "target_entropy": mean_entropy,
        "target_im": mean_entropy - marginal_entropy,
        "target_max_square": (square_sum / pixels).item(),
    }
