"""Target-domain losses of the maximum-squares paper, with the reference code's exact normalisations.

Every loss takes logits `(B, C, H, W)` (already upsampled to the input size) and returns a float32 scalar.
Logits are cast to float32 first because the trainer runs the model under bf16 autocast. `loss.target` may
also name a loss of the user's own, `package.module:function` (msl.user_loss, docs/losses.md §1.9).

Normalisations follow the official code (docs/losses.md §1), because the λ_T values were tuned against them:
* max-squares:      −Σ p² / (2·B·C·H·W)                      (mean over elements, halved)
* IW max-squares:   −Σ w·Σ_c p² / (B·C)                      (sum over pixels, no ½: 2× max-squares at α=0)
* entropy:          Σ −p·log p / (B·C·H·W)                   (mean over elements = pixel entropy / C)
* IW entropy:       Σ w·(−Σ_c p·log p) / (B·C)               (equals entropy at α=0)
* hard / guidance:  cross-entropy averaged over the confident pixels.
Softmax probabilities are not detached: the gradient flows through p, as in the reference.

Deliberate fixes of reference bugs (docs/reference-quirks.md §9.3, §10.1, §10.15):
* image-wise weights are per image for any batch size (the reference is only right at B=1) and are
  computed on the logits' device with one batched histogram, without a host copy or sync;
* hard / guidance losses return a zero that still carries a (zero) gradient when no pixel passes the
  threshold, where the reference returns NaN.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from msl.labels import IGNORE_INDEX
from msl.metrics import predicted_classes
from msl.user_loss import bind_user_loss, is_import_path


def image_wise_weights(logits: Tensor, ratio: float = 0.2) -> Tensor:
    """Detached per-pixel weights `(B, H, W)` of the image-wise weighted losses (docs/losses.md §1.2 item 4).

    With n(b,k) the number of pixels of image b predicted as class k and P = H·W, class k of image b gets
    w(b,k) = 1 / max(n(b,k)^ratio · P^(1−ratio), 1), and each pixel gets the weight of its predicted class.
    The clamp only matters for empty classes (which no pixel uses). All images are counted in one
    scatter_add over the index b·C + ŷ, so there is no Python loop, host copy or device sync.
    """
    batch_size, num_classes, height, width = logits.shape
    predicted = predicted_classes(logits.detach())  # (B, H, W)
    image_offsets = torch.arange(batch_size, device=logits.device).view(batch_size, 1, 1) * num_classes
    class_index = (predicted + image_offsets).flatten()  # (B·H·W,) index into the flat (B·C) histogram
    counts = torch.zeros(batch_size * num_classes, device=logits.device, dtype=torch.float32)
    counts.scatter_add_(0, class_index, torch.ones_like(class_index, dtype=torch.float32))  # (B·C,)
    class_weights = 1.0 / (counts.pow(ratio) * float(height * width) ** (1.0 - ratio)).clamp(min=1.0)
    return class_weights[class_index].view(batch_size, height, width)


def _pixel_square_sum(logits: Tensor) -> Tensor:
    """Σ_c p² per pixel `(B, H, W)`, gradient flowing through p."""
    return logits.softmax(dim=1).pow(2).sum(dim=1)


def _pixel_entropy(logits: Tensor) -> Tensor:
    """Shannon entropy −Σ_c p·log p per pixel `(B, H, W)`, through both p and log p."""
    return -(logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1)


def _image_wise_weighted_sum(pixel_values: Tensor, logits: Tensor, ratio: float) -> Tensor:
    """Σ_{b,h,w} w(b,h,w)·value(b,h,w) / (B·C): the reference's IW normalisation (docs/losses.md §1.2 item
    6)."""
    batch_size, num_classes = logits.shape[:2]
    return (image_wise_weights(logits, ratio) * pixel_values).sum() / (batch_size * num_classes)


def _confident_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy averaged over pixels whose label is not IGNORE_INDEX; a graph-connected 0 if none.

    Dividing the summed loss by max(count, 1) keeps this free of host syncs and of the reference's 0/0 NaN.
    """
    kept_pixels = (labels != IGNORE_INDEX).sum().clamp(min=1)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum") / kept_pixels


def max_square_loss(logits: Tensor) -> Tensor:
    """Maximum-squares loss −Σ p² / (2·B·C·H·W) (docs/losses.md §1.1)."""
    logits = logits.float()
    return -_pixel_square_sum(logits).mean() / (2 * logits.shape[1])


def iw_max_square_loss(logits: Tensor, ratio: float = 0.2) -> Tensor:
    """Image-wise weighted maximum-squares loss −Σ w·Σ_c p² / (B·C), no ½ factor (docs/losses.md §1.2)."""
    logits = logits.float()
    return -_image_wise_weighted_sum(_pixel_square_sum(logits), logits, ratio)


def entropy_loss(logits: Tensor) -> Tensor:
    """Entropy minimisation loss, the mean over all B·C·H·W elements of −p·log p (docs/losses.md §1.3)."""
    logits = logits.float()
    return _pixel_entropy(logits).mean() / logits.shape[1]


def iw_entropy_loss(logits: Tensor, ratio: float = 0.2) -> Tensor:
    """Image-wise weighted entropy loss Σ w·H(p) / (B·C) (docs/losses.md §1.4)."""
    logits = logits.float()
    return _image_wise_weighted_sum(_pixel_entropy(logits), logits, ratio)


def hard_pseudo_label_loss(logits: Tensor, threshold: float = 0.95) -> Tensor:
    """Cross-entropy against the argmax pseudo-labels of pixels with max p > threshold (docs/losses.md §1.5).

    Labels come from detached probabilities; the threshold is strict. Deviation from the reference: when no
    pixel passes the threshold this returns 0 with a zero gradient instead of NaN.
    """
    logits = logits.float()
    confidence, pseudo_labels = logits.detach().softmax(dim=1).max(dim=1)  # (B, H, W) each
    labels = torch.where(confidence > threshold, pseudo_labels, IGNORE_INDEX)
    return _confident_cross_entropy(logits, labels)


def multi_level_guidance_loss(main_logits: Tensor, aux_logits: Tensor, threshold: float = 0.95) -> Tensor:
    """Multi-level self-produced guidance: aux-head cross-entropy on the combined label (docs/losses.md §1.6).

    A pixel is kept if either head is confident (max p > threshold, strict); its label is the argmax of the
    averaged probabilities of both heads (detached). Only `aux_logits` receives a gradient; the caller
    multiplies by λ_seg·λ_T. Deviation from the reference: 0 with a zero gradient instead of NaN when no
    pixel is kept.
    """
    main_logits, aux_logits = main_logits.float(), aux_logits.float()
    main_probs = main_logits.detach().softmax(dim=1)  # (B, C, H, W)
    aux_probs = aux_logits.detach().softmax(dim=1)  # (B, C, H, W)
    confident = (main_probs.amax(dim=1) > threshold) | (aux_probs.amax(dim=1) > threshold)  # (B, H, W)
    combined_labels = predicted_classes((main_probs + aux_probs) / 2)  # (B, H, W)
    labels = torch.where(confident, combined_labels, IGNORE_INDEX)
    return _confident_cross_entropy(aux_logits, labels)


def no_target_loss(logits: Tensor) -> Tensor:
    """Zero loss (source-only training) that stays connected to the graph so that backward still works."""
    return logits.float().sum() * 0.0


TARGET_LOSSES: dict[str, Callable[..., Tensor]] = {
    "none": no_target_loss,
    "entropy": entropy_loss,
    "iw_entropy": iw_entropy_loss,
    "maxsquare": max_square_loss,
    "iw_maxsquare": iw_max_square_loss,
    "hard": hard_pseudo_label_loss,
}
TARGET_LOSS_NAMES: tuple[str, ...] = tuple(TARGET_LOSSES)


def build_target_loss(
    name: str, *, ratio: float = 0.2, threshold: float = 0.95, options: dict[str, Any] | None = None
) -> Callable[[Tensor], Tensor]:
    """The target loss `name` as a function of the main-head logits, bound to the options it uses.

    `ratio` (IW α) only reaches the image-wise weighted losses and `threshold` (τ) only the hard loss. A name
    `package.module:function` is a user loss (msl.user_loss), which gets `options` as keyword arguments.
    """
    if is_import_path(name):
        return bind_user_loss(name, options or {})
    if name not in TARGET_LOSSES:
        raise ValueError(f"unknown target loss {name!r}; expected one of {TARGET_LOSS_NAMES}")
    loss = TARGET_LOSSES[name]
    accepted = inspect.signature(loss).parameters
    bound = {key: value for key, value in {"ratio": ratio, "threshold": threshold}.items() if key in accepted}
    return functools.partial(loss, **bound)


def target_loss(name: str, logits: Tensor, *, ratio: float = 0.2, threshold: float = 0.95) -> Tensor:
    """Evaluate the target loss `name` on main-head logits `(B, C, H, W)`; see `build_target_loss`."""
    return build_target_loss(name, ratio=ratio, threshold=threshold)(logits)
