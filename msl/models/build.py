"""Networks by name, and their optimiser parameter groups."""

from __future__ import annotations

from msl.models.base import TwoHeadNet
from msl.models.deeplab import ARCHS as DEEPLAB_ARCHS  # re-exported: msl.config checks names against it
from msl.models.deeplab import DeepLabMulti
from msl.models.small import SmallSegNet, SmallSpec

# The CPU benchmark's network, two ablations of it (results/benchmarks/small_model_ablation.md) and a
# half-width candidate for cheaper trials, measured and not taken (results/benchmarks/
# synth_calibration_half_width.md).
SMALL_ARCHS: dict[str, SmallSpec] = {
    "small_segnet": SmallSpec(),
    "small_segnet_bn": SmallSpec(norm="batch"),
    "small_segnet_coarse": SmallSpec(decoder=False),
    "small_segnet_half": SmallSpec(width=16),
}
ARCH_NAMES = (*DEEPLAB_ARCHS, *SMALL_ARCHS)


def build_model(arch: str, num_classes: int, aspp_branches: int = 2, freeze_bn: bool = False) -> TwoHeadNet:
    """A randomly initialised two-head network of a named architecture; load weights separately.

    For the DeepLabs, `aspp_branches=2` reproduces the reference (only dilations 6 and 12 contribute), 4 uses
    all four branches; the small networks have no ASPP. There is no single-head variant: like the reference,
    "single-level" training just ignores the aux output.
    """
    if arch in DEEPLAB_ARCHS:
        return DeepLabMulti(
            DEEPLAB_ARCHS[arch], num_classes, aspp_branches=aspp_branches, freeze_bn=freeze_bn
        )
    if arch in SMALL_ARCHS:
        return SmallSegNet(SMALL_ARCHS[arch], num_classes, freeze_bn=freeze_bn)
    raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCH_NAMES)}")


def param_groups(model: TwoHeadNet, head_lr_mult: float = 10.0) -> list[dict]:
    """Optimiser parameter groups: trunk at `lr_mult` 1, the heads (`model.HEAD_MODULES`) at `head_lr_mult`
    (docs/model.md §3.4).

    Each trainable parameter appears exactly once (the reference lists trunk parameters 3–4 times,
    docs/reference-quirks.md §9.2); frozen ones (stem batch norm, inactive ASPP branches) are left out. The
    trainer sets each group's learning rate to `base_lr * group["lr_mult"]`.
    """
    trunk, heads = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (heads if name.split(".", 1)[0] in model.HEAD_MODULES else trunk).append(parameter)
    return [
        {"name": "backbone", "params": trunk, "lr_mult": 1.0},
        {"name": "heads", "params": heads, "lr_mult": head_lr_mult},
    ]


def reference_param_groups(model: DeepLabMulti, head_lr_mult: float = 10.0) -> list[dict]:
    """`param_groups` with each parameter's multiplicity in the reference's SGD group, as `repeats`.

    The reference fills its backbone group by walking every module under each trunk block (conv1, bn1,
    layer1..layer4), the block included, and listing all parameters beneath each one (docs/model.md §3.4), so
    a parameter is listed once per module on its path within its block: the depth of its dotted name. That is
    1 for the stem conv, 3 for a residual block's convs and batch norms (`layer3.5.conv2.weight`) and 4 for a
    downsample's (`layer3.0.downsample.1.bias`). Heads are listed once. Frozen parameters are left out, as in
    `param_groups` (the reference skips the stem batch norm too; its dead ASPP branches get no gradient). For
    `msl.optim.RepeatedSGD`; only for `DeepLabMulti` networks, whose module names follow the reference.
    """
    if not isinstance(model, DeepLabMulti):
        raise TypeError(f"reference_param_groups needs a DeepLabMulti network, got {type(model).__name__}")
    groups = param_groups(model, head_lr_mult)
    depth = {parameter: name.count(".") for name, parameter in model.named_parameters()}
    for group in groups:
        group["repeats"] = [depth[p] if group["name"] == "backbone" else 1 for p in group["params"]]
    return groups
