"""What every segmentation network of msl shares: two heads, upsampled outputs, and frozen batch norm on demand."""

from __future__ import annotations

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
        size = images.shape[-2:]
        main, aux = self.forward_logits(images)
        return tuple(F.interpolate(z, size=size, mode="bilinear", align_corners=True) for z in (main, aux))

    def train(self, mode: bool = True) -> TwoHeadNet:
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self
