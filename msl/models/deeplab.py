"""Two-head DeepLab networks: the reference's DeepLab-v2 ResNet-101 and a shrunken ResNet-18 (docs/model.md
§3).

The network returns `(main, aux)` logits: `main` from an ASPP head on the last stage (module `layer6`), `aux`
from an ASPP head on the stage before it (module `layer5`). Module names follow the reference (`conv1`, `bn1`,
`layer1`..`layer6`, bottleneck children `conv1`/`bn1`/.../`downsample.{0,1}`) so that state-dict keys match
its checkpoints and the DeepLab ImageNet-init file (see `msl.models.weights`).

Decisions on the reference's quirks (docs/reference-quirks.md §9.1, §9.2, §10.7):
* ASPP early return: every head owns all four branch convs, so reference checkpoints (which store the dead
  branches) load strictly; `aspp_branches` says how many are summed. With 2 (the reference's behaviour) the
  branches with dilations 18 and 24 are kept as frozen parameters (`requires_grad=False`): they never affect
  the output, are left out of the optimiser groups and never trip DDP's unused-parameter check.
* Duplicated backbone parameters in the optimiser: `param_groups` lists each parameter once (the default);
  `reference_param_groups` gives each trunk parameter the reference's multiplicity, for
  `msl.optim.RepeatedSGD`.
* Trunk init: the reference draws every conv from N(0, 0.01) but always overwrites the trunk with ImageNet
  weights; we use torchvision's Kaiming init instead, which matters only when training from scratch (the small
  benchmark model). Head convs are N(0, 0.01) as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from msl.models.base import TwoHeadNet

HEAD_MODULES = ("layer5", "layer6")  # aux head (on layer3), main head (on layer4)


@dataclass(frozen=True)
class ArchSpec:
    """Shape of a two-head DeepLab: a ResNet trunk (stem + 4 stages) and the ASPP dilations of its heads."""

    block: type[BasicBlock] | type[Bottleneck]
    blocks_per_stage: tuple[int, int, int, int]
    stage_widths: tuple[int, int, int, int]  # torchvision "planes"; the stem has stage_widths[0] channels
    stage_strides: tuple[int, int, int, int]
    stage_dilations: tuple[int, int, int, int]
    head_dilations: tuple[int, int, int, int] = (6, 12, 18, 24)


ARCHS: dict[str, ArchSpec] = {
    # Caffe-style DeepLab-v2 (docs/model.md §3.2): output stride 8, layer3/layer4 dilated 2/4 in all blocks.
    "deeplabv2_resnet101": ArchSpec(
        block=Bottleneck,
        blocks_per_stage=(3, 4, 23, 3),
        stage_widths=(64, 128, 256, 512),
        stage_strides=(1, 2, 1, 1),
        stage_dilations=(1, 1, 2, 4),
    ),
    # ResNet-18 at a quarter of the width, output stride 8 like the reference, for the CPU benchmark: forward+
    # backward of a (2, 3, 128, 256) batch took 0.12-0.14 s on 2 shared threads (benchmarks/model_speed.py).
    # Head dilations shrink with the logit grid (17x33 for 128x256 inputs, 9x17 for 64x128) so that the
    # branches see image, not padding: dilation/grid height ~0.12 and ~0.24, near the reference's 6/65 and
    # 12/65 at 512x1024.
    "deeplab_resnet18_small": ArchSpec(
        block=BasicBlock,
        blocks_per_stage=(2, 2, 2, 2),
        stage_widths=(16, 32, 64, 128),
        stage_strides=(1, 2, 1, 1),
        stage_dilations=(1, 1, 2, 4),
        head_dilations=(2, 4, 6, 8),
    ),
}


class ASPPHead(nn.Module):
    """DeepLab-v2 classifier: parallel dilated 3×3 convs (with bias) whose outputs are summed.

    All `len(dilations)` branches exist as modules (`conv2d_list.{i}`); only the first `active_branches` run.
    The inactive ones are frozen so that they are inert in every respect but the state dict.
    """

    def __init__(self, in_channels: int, num_classes: int, dilations: tuple[int, ...], active_branches: int):
        super().__init__()
        if not 1 <= active_branches <= len(dilations):
            raise ValueError(f"active_branches must be in 1..{len(dilations)}, got {active_branches}")
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=d, dilation=d, bias=True)
            for d in dilations
        )
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
        for conv in self.conv2d_list[active_branches:]:
            conv.requires_grad_(False)
        self.active_branches = active_branches

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, C_in, h, w) -> (B, num_classes, h, w)
        active = self.conv2d_list[: self.active_branches]
        logits = active[0](features)
        for conv in active[1:]:
            logits = logits + conv(features)
        return logits


def _make_stage(
    block: type[BasicBlock] | type[Bottleneck],
    in_channels: int,
    width: int,
    num_blocks: int,
    stride: int,
    dilation: int,
) -> nn.Sequential:
    """One ResNet stage of torchvision blocks, rearranged the DeepLab-v2 (Caffe) way.

    The stride sits on the first conv of the first block (for a Bottleneck the 1×1, unlike torchvision's 3×3;
    for a BasicBlock the 3×3, as in torchvision) and every 3×3 conv of the stage, the first block's included,
    is dilated by `dilation` with matching padding (torchvision leaves the first block at the previous
    dilation).
    """
    out_channels = width * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    blocks = [block(in_channels, width, downsample=downsample)]
    blocks += [block(out_channels, width) for _ in range(num_blocks - 1)]
    blocks[0].conv1.stride = (stride, stride)
    stage = nn.Sequential(*blocks)
    for module in stage.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            module.dilation = module.padding = (dilation, dilation)
    return stage


class DeepLabMulti(TwoHeadNet):
    """ResNet trunk with an aux ASPP head on layer3 (`layer5`) and a main ASPP head on layer4 (`layer6`).

    `forward` returns `(main, aux)` logits bilinearly upsampled (align_corners=True) to the input size;
    `forward_logits` returns them at the trunk's output grid. The stem batch norm's affine parameters are
    frozen (docs/model.md §3.3); `freeze_bn` as in `TwoHeadNet`.
    """

    HEAD_MODULES = HEAD_MODULES

    def __init__(self, spec: ArchSpec, num_classes: int, aspp_branches: int = 2, freeze_bn: bool = False):
        super().__init__()
        stem_channels = spec.stage_widths[0]
        self.conv1 = nn.Conv2d(3, stem_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        stages, in_channels = [], stem_channels
        for width, num_blocks, stride, dilation in zip(
            spec.stage_widths, spec.blocks_per_stage, spec.stage_strides, spec.stage_dilations, strict=True
        ):
            stages.append(_make_stage(spec.block, in_channels, width, num_blocks, stride, dilation))
            in_channels = width * spec.block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        aux_channels, main_channels = (w * spec.block.expansion for w in spec.stage_widths[2:])
        self.layer5 = ASPPHead(aux_channels, num_classes, spec.head_dilations, aspp_branches)
        self.layer6 = ASPPHead(main_channels, num_classes, spec.head_dilations, aspp_branches)
        self.bn1.requires_grad_(False)
        self.freeze_bn = freeze_bn

    def forward_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(main, aux)` logits `(B, C, h, w)` at the trunk's output grid for images `(B, 3, H, W)`."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer2(self.layer1(x))
        layer3_features = self.layer3(x)
        layer4_features = self.layer4(layer3_features)
        return self.layer6(layer4_features), self.layer5(layer3_features)
