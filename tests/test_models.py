"""Tests of msl.models: DeepLab-v2 geometry (docs/model.md §3.2), ASPP branches, parameter groups, batch-norm
freezing and weight loading in the three file formats (docs/model.md §3.5, §3.6)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from msl.models import ASPPHead, WeightsMismatchError, build_model, load_weights, param_groups
from msl.models.build import SMALL_ARCHS

NUM_CLASSES = 19
SMALL = "deeplab_resnet18_small"


@pytest.fixture(scope="module")
def meta_resnet101():
    """The full DeepLab-v2 on the meta device: shapes without memory or compute."""
    with torch.device("meta"):
        return build_model("deeplabv2_resnet101", NUM_CLASSES)


def _small_model(seed: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(SMALL, NUM_CLASSES, **kwargs)


@pytest.mark.parametrize(
    ("height", "width", "grid"),
    [(512, 1024, (65, 129)), (720, 1280, (91, 161)), (640, 1280, (81, 161)), (760, 1280, (96, 161))],
)
def test_resnet101_logit_grid_and_output_size(meta_resnet101, height, width, grid):
    images = torch.empty(1, 3, height, width, device="meta")
    main_logits, aux_logits = meta_resnet101.forward_logits(images)
    assert main_logits.shape == aux_logits.shape == (1, NUM_CLASSES, *grid)
    main, aux = meta_resnet101(images)
    assert main.shape == aux.shape == (1, NUM_CLASSES, height, width)


def test_resnet101_is_caffe_style(meta_resnet101):
    """Stride on the bottleneck's 1×1 conv, every block of layer3/layer4 dilated 2/4, heads 6/12/18/24 with
    bias."""
    model = meta_resnet101
    assert model.maxpool.ceil_mode
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    for stage, dilation in ((model.layer3, 2), (model.layer4, 4)):
        assert [block.conv2.dilation for block in stage] == [(dilation, dilation)] * len(stage)
        assert [block.conv2.padding for block in stage] == [(dilation, dilation)] * len(stage)
    assert (len(model.layer3), model.layer5.conv2d_list[0].in_channels) == (23, 1024)
    assert model.layer6.conv2d_list[0].in_channels == 2048
    for head in (model.layer5, model.layer6):
        assert [conv.dilation[0] for conv in head.conv2d_list] == [6, 12, 18, 24]
        assert all(conv.bias is not None for conv in head.conv2d_list)


def test_small_model_outputs_upsampled_with_aligned_corners():
    model = _small_model(0).eval()
    images = torch.randn(
        2, 3, 65, 129
    )  # logit grid 9x17: every 8th output pixel lies on a logit (align_corners)
    with torch.no_grad():
        main, aux = model(images)
        main_logits, aux_logits = model.forward_logits(images)
    for full, low in ((main, main_logits), (aux, aux_logits)):
        assert full.shape == (2, NUM_CLASSES, 65, 129)
        assert low.shape[-2:] == (9, 17)
        torch.testing.assert_close(full[..., ::8, ::8], low)
        torch.testing.assert_close(
            full[..., 4, 4], (low[..., 0, 0] + low[..., 1, 0] + low[..., 0, 1] + low[..., 1, 1]) / 4
        )
    assert not torch.allclose(main, aux)


def test_main_head_reads_layer4_and_aux_head_reads_layer3():
    model = _small_model(0).eval()
    features = {}
    for name in ("layer3", "layer4"):
        getattr(model, name).register_forward_hook(
            lambda module, args, output, name=name: features.update({name: output})
        )
    with torch.no_grad():
        main_logits, aux_logits = model.forward_logits(torch.randn(1, 3, 64, 64))
        torch.testing.assert_close(main_logits, model.layer6(features["layer4"]))
        torch.testing.assert_close(aux_logits, model.layer5(features["layer3"]))


def _branch_sum(head: ASPPHead, features: torch.Tensor, dilations: list[int]) -> torch.Tensor:
    """Sum of plain dilated convolutions with the head's weights, branch by branch."""
    total = torch.zeros(())
    for index, dilation in enumerate(dilations):
        conv = head.conv2d_list[index]
        total = total + F.conv2d(features, conv.weight, conv.bias, padding=dilation, dilation=dilation)
    return total


@pytest.mark.parametrize(("active", "used_dilations"), [(2, [6, 12]), (4, [6, 12, 18, 24])])
def test_aspp_sums_exactly_the_active_branches(active, used_dilations):
    torch.manual_seed(0)
    head = ASPPHead(8, 5, (6, 12, 18, 24), active_branches=active)
    for conv in head.conv2d_list:  # larger weights than N(0, 0.01), so that differences are visible
        torch.nn.init.normal_(conv.weight)
        torch.nn.init.normal_(conv.bias)
    features = torch.randn(2, 8, 30, 30)
    with torch.no_grad():
        torch.testing.assert_close(head(features), _branch_sum(head, features, used_dilations))
        before = head(features)
        head.conv2d_list[3].weight.mul_(2.0)
        changed = not torch.allclose(head(features), before)
    assert changed == (active == 4)
    assert [conv.weight.requires_grad for conv in head.conv2d_list] == [True, True, active == 4, active == 4]


def test_heads_weights_are_normal_001():
    head = ASPPHead(2048, NUM_CLASSES, (6, 12, 18, 24), active_branches=2)
    weights = torch.cat([conv.weight.flatten() for conv in head.conv2d_list])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.01, rel=0.01)


def test_param_groups_list_each_trainable_parameter_once(meta_resnet101):
    groups = param_groups(meta_resnet101)
    assert [(group["name"], group["lr_mult"]) for group in groups] == [("backbone", 1.0), ("heads", 10.0)]
    listed = [id(p) for group in groups for p in group["params"]]
    trainable = {id(p) for p in meta_resnet101.parameters() if p.requires_grad}
    assert len(listed) == len(set(listed)) and set(listed) == trainable
    head_ids = {id(p) for group in groups if group["name"] == "heads" for p in group["params"]}
    heads = (meta_resnet101.layer5, meta_resnet101.layer6)
    active_head_params = [p for head in heads for conv in head.conv2d_list[:2] for p in conv.parameters()]
    assert head_ids == {id(p) for p in active_head_params}
    # Trunk: torchvision's ResNet-101 tensors minus fc (2) and the frozen stem batch norm (2).
    with torch.device("meta"):
        torchvision_tensors = len(list(torchvision.models.resnet101(weights=None).parameters()))
    assert len(groups[0]["params"]) == torchvision_tensors - 4
    assert not any(p.requires_grad for p in meta_resnet101.bn1.parameters())


def test_only_active_parameters_receive_gradients():
    model = _small_model(0, aspp_branches=2).train()
    main, aux = model(torch.randn(2, 3, 64, 64))
    (main.sum() + aux.sum()).backward()
    for group in param_groups(model):
        assert all(p.grad is not None for p in group["params"])
    for head in (model.layer5, model.layer6):
        assert all(conv.weight.grad is None for conv in head.conv2d_list[2:])
    assert model.bn1.weight.grad is None


@pytest.mark.parametrize("freeze_bn", [False, True])
def test_freeze_bn_keeps_running_stats(freeze_bn):
    model = _small_model(0, freeze_bn=freeze_bn).train()
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats_before = [m.running_mean.clone() for m in batch_norms]
    main, aux = model(torch.randn(2, 3, 64, 64) * 3 + 1)
    (main.sum() + aux.sum()).backward()
    stats_kept = [torch.equal(b, m.running_mean) for b, m in zip(stats_before, batch_norms, strict=True)]
    assert stats_kept == [freeze_bn] * len(batch_norms)
    assert [m.training for m in batch_norms] == [not freeze_bn] * len(batch_norms)
    assert model.training and model.layer1[0].conv1.training
    assert model.layer1[0].bn1.weight.grad is not None  # affine parameters still train


def test_checkpoint_round_trip(tmp_path):
    trained = _small_model(1).eval()
    path = tmp_path / "checkpoint.pth"
    rng_state = {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}
    torch.save({"model": trained.state_dict(), "iteration": 7, "rng": rng_state}, path)
    fresh = _small_model(2).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert not torch.allclose(fresh(images)[0], trained(images)[0])
        assert load_weights(fresh, path) == "msl"
        for ours, theirs in zip(fresh(images), trained(images), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_reference_checkpoint_with_dataparallel_prefix(tmp_path):
    trained = _small_model(1)
    path = tmp_path / "gta5best.pth"
    state = {f"module.{key}": value for key, value in trained.state_dict().items()}
    torch.save({"epoch": 3, "iteration": 10, "state_dict": state, "best_MIou": 0.4}, path)
    fresh = _small_model(2)
    assert load_weights(fresh, path) == "msl"
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in trained.state_dict().items())


def test_deeplab_init_file_loads_trunk_and_skips_its_classifier(tmp_path):
    source = _small_model(1)
    trunk = {k: v for k, v in source.state_dict().items() if not k.startswith(("layer5", "layer6"))}
    init_file = {f"Scale.{k}": v for k, v in trunk.items() if not k.endswith("num_batches_tracked")}
    init_file["Scale.layer5.conv2d_list.0.weight"] = torch.randn(21, 128, 3, 3)  # the file's own classifier
    path = tmp_path / "DeepLab_resnet_pretrained_init.pth"
    torch.save(init_file, path)
    model = _small_model(2)
    heads_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("layer5", "layer6"))}
    assert load_weights(model, path) == "deeplab_init"
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in trunk.items() if not k.endswith("num_batches_tracked"))
    assert all(torch.equal(loaded[k], v) for k, v in heads_before.items())


def test_torchvision_file_loads_into_resnet101_trunk(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet101(weights=None).state_dict()
    path = tmp_path / "resnet101.pth"
    torch.save(imagenet, path)
    model = build_model("deeplabv2_resnet101", NUM_CLASSES)
    heads_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("layer5", "layer6"))}
    assert load_weights(model, path) == "torchvision"
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in imagenet.items() if not k.startswith("fc."))
    assert all(torch.equal(loaded[k], v) for k, v in heads_before.items())


def test_mismatched_file_fails_listing_keys(tmp_path):
    state = _small_model(1).state_dict()
    state["layer1.0.conv1.kernel"] = state.pop("layer1.0.conv1.weight")
    state["extra.weight"] = torch.zeros(1)
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save({"model": state}, path)
    with pytest.raises(WeightsMismatchError) as error:
        load_weights(_small_model(2), path)
    message = str(error.value)
    assert "1 missing: layer1.0.conv1.weight" in message
    assert "2 unexpected: layer1.0.conv1.kernel, extra.weight" in message
    assert "1 shape mismatches: layer2.0.conv1.weight (file (3, 3, 3, 3) vs model (32, 16, 3, 3))" in message


def test_heads_may_not_be_missing_from_a_checkpoint_and_long_lists_are_cut(tmp_path):
    state = {k: v for k, v in _small_model(1).state_dict().items() if not k.startswith(("layer5", "layer6"))}
    path = tmp_path / "no_heads.pth"
    torch.save({"model": state}, path)
    expected = r"16 missing: layer5\.conv2d_list\.0\.weight, .*\(6 more\)"
    with pytest.raises(WeightsMismatchError, match=expected):
        load_weights(_small_model(2), path)


def test_missing_file_raises_with_path(tmp_path):
    path = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(FileNotFoundError, match="nowhere/weights.pth"):
        load_weights(_small_model(0), path)


def test_unknown_arch_is_rejected():
    with pytest.raises(ValueError, match="deeplabv2_resnet101"):
        build_model("deeplabv3", NUM_CLASSES)


@pytest.mark.parametrize(
    ("grid", "size"),
    [((16, 32), (64, 128)), ((9, 17), (64, 128)), ((5, 7), (33, 40)), ((1, 4), (8, 8)), ((8, 8), (8, 8))],
)
def test_cpu_upsampling_matches_torch_interpolate_in_values_and_gradients(grid, size):
    """The CPU path of `upsample_logits` (interpolation matrices) against F.interpolate, forward and
    backward."""
    from msl.models.base import upsample_logits

    logits = torch.randn(2, 19, *grid, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 19, *size, dtype=torch.float64)
    ours = upsample_logits(logits, size)
    (ours_grad,) = torch.autograd.grad(ours, logits, upstream)
    theirs = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=True)
    (theirs_grad,) = torch.autograd.grad(theirs, logits, upstream)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch", SMALL_ARCHS)
def test_each_small_network_returns_both_heads_at_the_input_size_from_its_own_grids(arch):
    """The benchmark network and its variants: main at 1/4 through the decoder (1/8 without), aux at 1/8."""
    model = build_model(arch, NUM_CLASSES).eval()
    images = torch.randn(2, 3, 64, 128)  # (B, 3, H, W)
    main, aux = model.forward_logits(images)
    main_grid = (8, 16) if arch == "small_segnet_coarse" else (16, 32)
    assert (tuple(main.shape), tuple(aux.shape)) == ((2, NUM_CLASSES, *main_grid), (2, NUM_CLASSES, 8, 16))
    assert [tuple(out.shape) for out in model(images)] == [(2, NUM_CLASSES, 64, 128)] * 2
