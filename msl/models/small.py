"""A small two-head segmentation network for the CPU benchmark, built so that target losses can move it.

Why not a shrunken DeepLab (`deeplab_resnet18_small`): on the embedded benchmark's 64x128 images its heads
predict on an 8x16 grid through dilated ASPP convs, and its UDA stage barely changes its target predictions
whatever the target loss (results/benchmarks/small_model_ablation.md measures which differences matter). This
network keeps what multi-level guidance needs (a main and an aux head, `forward` returning `(main, aux)` at
the input size) and
differs in three ways that the ablation isolates:

* a finer logit grid: the main head predicts at 1/4 of the input (16x32 for 64x128), not 1/8;
* a decoder: the context features (1/8) are upsampled and fused with the 1/4 features before the main head;
  the aux head reads the 1/8 context features after the first dilated block, as DeepLab's aux head reads
  layer3;
* group normalisation (`norm="group"`): no running statistics, so forwarding target images changes nothing by
  itself, and a `source_only` row and an `adabn` row only differ where the network has batch norm.

Layout (channels for `width` 32, input (B, 3, H, W)):

    stem     conv3x3/2 3->16, conv3x3 16->16                  (B, 16, H/2, W/2)
    down1    conv3x3/2 16->32, conv3x3 32->32                 (B, 32, H/4, W/4)   -> skip
    down2    conv3x3/2 32->64                                 (B, 64, H/8, W/8)
    context  residual dilated conv3x3 64->64, dilation 2      -> aux_head (1x1 conv)
             residual dilated conv3x3 64->64, dilations 4, 8
    decoder  conv1x1 64->32, upsample x2, concat skip,
             conv3x3 64->32                                   (B, 32, H/4, W/4)   -> main_head (1x1 conv)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msl.models.base import TwoHeadNet


@dataclass(frozen=True)
class SmallSpec:
    """Shape of a `SmallSegNet`: normalisation, and whether the main head predicts at 1/4 through the
    decoder."""

    norm: str = "group"  # group | batch
    decoder: bool = (
        True  # False: the main head reads the 1/8 context features directly (an 8x16 grid at 64x128)
    )
    width: int = 32


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.GroupNorm(8, channels) if kind == "group" else nn.BatchNorm2d(channels)


def _conv(
    in_channels: int, out_channels: int, norm: str, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """conv3x3 (no bias) -> norm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        ),
        _norm(norm, out_channels),
        nn.ReLU(inplace=True),
    )


class _DilatedResidual(nn.Module):
    """x + norm(conv3x3_d(x)) for each dilation d in turn, ReLU after each sum."""

    def __init__(self, channels: int, dilations: tuple[int, ...], norm: str):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False), _norm(norm, channels)
            )
            for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, C, h, w)
        for conv in self.convs:
            x = F.relu(x + conv(x))
        return x


class SmallSegNet(TwoHeadNet):
    """See the module docstring. `forward_logits` returns `(main, aux)` at their own grids: main at 1/4 with
    the decoder (else 1/8), aux at 1/8."""

    HEAD_MODULES = ("aux_head", "main_head")  # trained at `optim.head_lr_mult` (msl.models.param_groups)

    def __init__(self, spec: SmallSpec, num_classes: int, freeze_bn: bool = False):
        super().__init__()
        w, norm = spec.width, spec.norm
        self.stem = nn.Sequential(_conv(3, w // 2, norm, stride=2), _conv(w // 2, w // 2, norm))
        self.down1 = nn.Sequential(_conv(w // 2, w, norm, stride=2), _conv(w, w, norm))
        self.down2 = _conv(w, 2 * w, norm, stride=2)
        self.context1 = _DilatedResidual(2 * w, (2,), norm)
        self.context2 = _DilatedResidual(2 * w, (4, 8), norm)
        self.decoder = None
        if spec.decoder:
            self.reduce = nn.Sequential(
                nn.Conv2d(2 * w, w, 1, bias=False), _norm(norm, w), nn.ReLU(inplace=True)
            )
            self.decoder = _conv(2 * w, w, norm)
        self.aux_head = nn.Conv2d(2 * w, num_classes, 1)
        self.main_head = nn.Conv2d(w if spec.decoder else 2 * w, num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for head in (self.aux_head, self.main_head):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        self.freeze_bn = freeze_bn

    def forward_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.down1(self.stem(images))  # (B, w, H/4, W/4)
        aux_features = self.context1(self.down2(skip))  # (B, 2w, H/8, W/8)
        features = self.context2(aux_features)  # (B, 2w, H/8, W/8)
        if self.decoder is not None:
            upsampled = F.interpolate(
                self.reduce(features), size=skip.shape[-2:], mode="bilinear", align_corners=False
            )  # (B, w, H/4, W/4)
            features = self.decoder(torch.cat([upsampled, skip], dim=1))  # (B, w, H/4, W/4)
        return self.main_head(features), self.aux_head(aux_features)
