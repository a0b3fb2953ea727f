"""What every segmentation network of msl shares: two heads, upsampled outputs, and frozen batch norm on
demand."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


class TwoHeadNet(nn.Module):
    """A network with a main and an aux head. Subclasses implement `forward_logits` (both heads at their own
    grids) and name their head modules in `HEAD_MODULES` (trained at `optim.head_lr_mult`, and absent from
    ImageNet weight files). With `freeze_bn` set, `train()` keeps every batch norm in eval mode (running
    statistics used and not updated) while their affine parameters and everything else still train."""

    HEAD_MODULES: tuple[str, ...] = ()
    freeze_bn: bool = False

    def forward_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(main, aux)` logits `(B, C, H, W)` at the input size of images `(B, 3, H, W)` (bilinear,
        align_corners=True, as the reference upsamples)."""
        size = tuple(images.shape[-2:])
        main, aux = self.forward_logits(images)
        return upsample_logits(main, size), upsample_logits(aux, size)

    def train(self, mode: bool = True) -> TwoHeadNet:
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling with align_corners=True, `(B, C, h, w)` -> `(B, C, H, W)`.

    On the CPU it runs as two matrix products with the 1-D interpolation matrices (rows: output positions,
    columns: the two input neighbours' weights), the same linear map as `F.interpolate` up to float rounding,
    whose backward is ~4x faster there than interpolate's; that backward is a large part of a small model's
    iteration (benchmarks/model_speed.py). Other devices use `F.interpolate`."""
    if logits.device.type != "cpu" or tuple(logits.shape[-2:]) == tuple(size):
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
    rows = _interpolation_matrix(logits.shape[-2], size[0], logits.dtype)  # (H, h)
    columns = _interpolation_matrix(logits.shape[-1], size[1], logits.dtype)  # (W, w)
    return rows @ logits @ columns.T  # (B, C, H, W)


@functools.cache
def _interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation with align_corners=True."""
    if n_out == 1 or n_in == 1:
        matrix = torch.zeros(n_out, n_in, dtype=dtype)
        matrix[:, 0] = 1.0
        return matrix
    position = torch.arange(n_out, dtype=torch.float64) * (n_in - 1) / (n_out - 1)  # (n_out,) in input pixels
    left = position.floor().long().clamp(max=n_in - 2)
    right_weight = position - left
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    matrix[torch.arange(n_out), left] = 1.0 - right_weight
    matrix[torch.arange(n_out), left + 1] += right_weight
    return matrix.to(dtype)
