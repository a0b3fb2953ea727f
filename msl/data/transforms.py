"""Geometric and photometric preprocessing (docs/datasets.md §5.1) and the two inits' image normalisations.

Image and label pass through the same torchvision v2 transforms as `tv_tensors.Image` (uint8, bicubic with
antialiasing, like PIL's BICUBIC) and `tv_tensors.Mask` (nearest-exact: the source pixel under each output
pixel's centre, as PIL's NEAREST), so flips, scales and crops agree by construction; the blur
touches the image only.
Randomness comes from torch's global generator, which the dataset seeds per item (see `msl.data.loader`).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from msl.labels import IGNORE_INDEX

NORMALIZATIONS = ("bgr_mean", "imagenet")
# Caffe DeepLab init (the reference's numpy_transform): BGR order, this mean subtracted, 0-255 scale.
BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
# torchvision ImageNet weights: RGB in [0, 1], then this mean and std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResizeWH(v2.Transform):
    """Resize to `size` = (W, H), times a scale drawn uniformly from `scale_range` when one is given.

    Aspect ratio is not kept, as in the reference's default resize path. Images: bicubic with antialiasing;
    masks: nearest-exact.
    """

    def __init__(self, size: tuple[int, int], scale_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.size = size
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        scale = 1.0 if self.scale_range is None else float(torch.empty(()).uniform_(*self.scale_range))
        width, height = self.size
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        nearest = isinstance(inpt, tv_tensors.Mask)
        interpolation = InterpolationMode.NEAREST_EXACT if nearest else InterpolationMode.BICUBIC
        return self._call_kernel(F.resize, inpt, params["size"], interpolation=interpolation, antialias=True)


class RandomGaussianBlur(v2.Transform):
    """With probability `p`, blur images (masks pass through) with a Gaussian of sigma ~ U[0, max_sigma).

    The reference's PIL GaussianBlur(radius ~ U[0, 1)) takes the radius as the standard deviation. OpenCV's
    separable kernel (+-3 sigma, reflected borders) is used because torchvision's dense 2-D convolution takes
    ~100 ms on a 1280x720 image, a third of a loader worker's time per item.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, p: float = 0.5, max_sigma: float = 1.0) -> None:
        super().__init__()
        self.p = p
        self.max_sigma = max_sigma

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = bool(torch.rand(()) < self.p)
        return {"sigma": float(torch.rand(())) * self.max_sigma if apply else 0.0}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["sigma"] < 1e-3:  # below this OpenCV's kernel is the identity anyway
            return inpt
        pixels = np.ascontiguousarray(inpt.permute(1, 2, 0).numpy())  # (H, W, C)
        blurred = cv2.GaussianBlur(pixels, (0, 0), sigmaX=params["sigma"], borderType=cv2.BORDER_REFLECT_101)
        return tv_tensors.wrap(torch.from_numpy(blurred.reshape(pixels.shape)).permute(2, 0, 1), like=inpt)


def build_transform(
    size: tuple[int, int] | None,
    *,
    train: bool,
    random_scale: tuple[float, float] | None = None,
    random_crop: tuple[int, int] | None = None,
    flip: bool = True,
    blur: bool = True,
) -> v2.Transform:
    """The transform of an (image, mask) pair; sizes are (W, H).

    train: flip (p=0.5) -> resize to `size` (times a random scale) -> random crop (padding the image with 0
    and the label with ignore where the scaled image is smaller) -> Gaussian blur (p=0.5, sigma ~ U(0, 1)) on
    the image (sigma as PIL's radius). Evaluation: resize only. `size` None keeps the file's size.
    """
    steps: list[v2.Transform] = []
    if train and flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if size is not None:
        steps.append(ResizeWH(size, random_scale if train else None))
    if train and random_crop is not None:
        crop_w, crop_h = random_crop
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
        steps.append(v2.RandomCrop((crop_h, crop_w), pad_if_needed=True, fill=fill))
    if train and blur:
        steps.append(RandomGaussianBlur(p=0.5, max_sigma=1.0))
    return v2.Compose(steps) if steps else v2.Identity()


def _channel_constants(values: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(3, 1, 1)  # (3, 1, 1)


def normalize(image: torch.Tensor, normalization: str) -> torch.Tensor:
    """Float32 network input `(..., 3, H, W)` from an RGB uint8 image `(..., 3, H, W)`.

    bgr_mean: channels reversed to BGR, BGR_MEAN subtracted, 0-255 scale (the DeepLab init checkpoint).
    imagenet: RGB / 255, then ImageNet mean and std (torchvision weights).
    """
    pixels = image.to(torch.float32)
    if normalization == "bgr_mean":
        return pixels.flip(-3) - _channel_constants(BGR_MEAN, pixels)
    if normalization == "imagenet":
        return (pixels / 255 - _channel_constants(IMAGENET_MEAN, pixels)) / _channel_constants(
            IMAGENET_STD, pixels
        )
    raise ValueError(f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")


def denormalize(image: torch.Tensor, normalization: str) -> torch.Tensor:
    """RGB uint8 `(..., 3, H, W)` back from a network input `(..., 3, H, W)`, e.g. for TensorBoard images."""
    if normalization == "bgr_mean":
        pixels = (image + _channel_constants(BGR_MEAN, image)).flip(-3)
    elif normalization == "imagenet":
        pixels = (
            image * _channel_constants(IMAGENET_STD, image) + _channel_constants(IMAGENET_MEAN, image)
        ) * 255
    else:
        raise ValueError(
            f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}"
        )
    return pixels.round().clamp(0, 255).to(torch.uint8)
