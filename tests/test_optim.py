"""The reference's duplicated backbone entries (docs/model.md §3.4, docs/reference-quirks.md §9.2): the
multiplicities of `reference_param_groups` and the arithmetic of `RepeatedSGD`, against a listing and an SGD
loop written here from the reference's description, and against torch.optim.SGD where the two must agree."""

from __future__ import annotations

import copy
import warnings
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from msl.config import load_config
from msl.models import build_model, param_groups
from msl.models.build import reference_param_groups
from msl.optim import RepeatedSGD
from msl.trainer import train
from tests.conftest import tiny_config

NUM_CLASSES = 19
LR, HEAD_LR_MULT, MOMENTUM, WEIGHT_DECAY = 0.01, 10.0, 0.9, 5e-4


def reference_listing(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The reference's backbone group as described: for each trunk block, every module under it (the block
    too), and every trainable parameter beneath that module, duplicates kept."""
    blocks = (model.conv1, model.bn1, model.layer1, model.layer2, model.layer3, model.layer4)
    return [
        p for block in blocks for module in block.modules() for p in module.parameters() if p.requires_grad
    ]


def test_resnet101_multiplicities_are_the_references():
    with torch.device("meta"):
        model = build_model("deeplabv2_resnet101", NUM_CLASSES)
    backbone, heads = reference_param_groups(model)
    names = {p: name for name, p in model.named_parameters()}
    listed = Counter(reference_listing(model))
    assert dict(zip(backbone["params"], backbone["repeats"], strict=True)) == dict(listed)
    # docs/model.md §3.4 in words: stem conv x1, block convs and batch norms x3, downsample convs and norms
    # x4.
    expected = {1: ["conv1.weight"], 4: [], 3: []}
    for p in backbone["params"]:
        if names[p] != "conv1.weight":
            expected[4 if ".downsample." in names[p] else 3].append(names[p])
    for p, repeats in zip(backbone["params"], backbone["repeats"], strict=True):
        assert names[p] in expected[repeats]
    assert len(expected[4]) == 4 * 3  # one downsample per stage: conv weight, batch-norm weight and bias
    assert heads["repeats"] == [1] * len(heads["params"]) and heads["lr_mult"] == HEAD_LR_MULT
    assert backbone["params"] == param_groups(model)[0]["params"]


def _loss(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    main, aux = model(images)  # (B, C, H, W) each
    return F.cross_entropy(main, labels) + 0.1 * F.cross_entropy(aux, labels)


def _naive_2019_sgd_step(listing: list[torch.nn.Parameter], lr_of: dict, buffers: dict) -> None:
    """torch.optim.SGD's step as of 2019, walked over a list with duplicates: weight decay added into .grad in
    place, one momentum buffer per parameter (created from the first listing), one update per listing."""
    with torch.no_grad():
        for p in listing:
            d_p = p.grad
            d_p.add_(p, alpha=WEIGHT_DECAY)
            if p not in buffers:
                buffers[p] = d_p.clone()
            else:
                buffers[p].mul_(MOMENTUM).add_(d_p)
            p.add_(buffers[p], alpha=-lr_of[p])


def test_repeated_sgd_matches_the_references_duplicated_sgd_loop():
    torch.manual_seed(0)
    model = build_model("deeplab_resnet18_small", NUM_CLASSES).train()
    naive, plain = copy.deepcopy(model), copy.deepcopy(model)
    optimizer = RepeatedSGD(
        reference_param_groups(model, HEAD_LR_MULT), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    heads = [p for head in (naive.layer5, naive.layer6) for p in head.parameters() if p.requires_grad]
    listing = reference_listing(naive) + heads
    lr_of = {p: LR for p in listing} | {p: LR * HEAD_LR_MULT for p in heads}
    plain_sgd = torch.optim.SGD(
        param_groups(plain, HEAD_LR_MULT), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    for group in plain_sgd.param_groups:
        group["lr"] = LR * group["lr_mult"]
    buffers: dict = {}
    for step in range(2):
        generator = torch.Generator().manual_seed(step)
        images = torch.randn(1, 3, 32, 32, generator=generator)  # (B, 3, H, W)
        labels = torch.randint(0, NUM_CLASSES, (1, 32, 32), generator=generator)  # (B, H, W)
        for network in (model, naive, plain):
            network.zero_grad(set_to_none=True)
            _loss(network, images, labels).backward()
        for group in optimizer.param_groups:
            group["lr"] = LR * group["lr_mult"]
        optimizer.step()
        _naive_2019_sgd_step(listing, lr_of, buffers)
        plain_sgd.step()
        if (
            step == 0
        ):  # the stem conv is listed once: its first step is plain SGD's (later ones see other weights)
            torch.testing.assert_close(model.conv1.weight, plain.conv1.weight)
    for (name, ours), theirs in zip(model.named_parameters(), naive.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, msg=name)
    # The duplicates matter: stepping every parameter once lands elsewhere.
    assert not torch.allclose(model.layer1[0].conv1.weight, plain.layer1[0].conv1.weight)


def test_repeated_sgd_with_single_repeats_is_torch_sgd():
    torch.manual_seed(0)
    ours, theirs = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    with torch.no_grad():
        theirs.copy_(ours)
    mine = RepeatedSGD([ours], lr=0.1, momentum=MOMENTUM, weight_decay=0.05)
    torchs = torch.optim.SGD([theirs], lr=0.1, momentum=MOMENTUM, weight_decay=0.05)
    for _ in range(4):
        gradient = torch.randn(5)
        ours.grad, theirs.grad = gradient.clone(), gradient.clone()
        mine.step(), torchs.step()
        torch.testing.assert_close(ours, theirs)
    assert torch.equal(ours.grad, theirs.grad)  # .grad is left as backward wrote it


def test_without_momentum_or_decay_repeats_are_torchs_duplicates():
    """The one setting where today's torch.optim.SGD and the 2019 loop agree on duplicates: k plain steps."""
    start = torch.randn(4)
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    mine = RepeatedSGD([{"params": [ours], "repeats": [3]}], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", UserWarning
        )  # "duplicate parameters; in future, this will cause an error"
        torchs = torch.optim.SGD([{"params": [theirs, theirs, theirs]}], lr=0.1)
    for _ in range(2):
        gradient = torch.randn(4)
        ours.grad, theirs.grad = gradient.clone(), gradient.clone()
        mine.step(), torchs.step()
    torch.testing.assert_close(ours, theirs)


def test_first_step_of_a_triple_parameter_is_not_a_tripled_learning_rate():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = RepeatedSGD([{"params": [parameter], "repeats": [3]}], lr=1.0, momentum=0.9)
    parameter.grad = torch.ones(1)
    optimizer.step()
    assert parameter.item() == pytest.approx(-(1 + 1.9 + 2.71))  # buffer g, 1.9 g, 2.71 g


def test_repeats_must_match_the_parameters():
    parameters = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    with pytest.raises(ValueError, match="'repeats' must hold one int >= 1 per parameter"):
        RepeatedSGD([{"params": parameters, "repeats": [3]}], lr=0.1)
    with pytest.raises(ValueError, match="repeats"):
        RepeatedSGD([{"params": parameters, "repeats": [3, 0]}], lr=0.1)


def test_trainer_runs_and_resumes_with_reference_param_groups(synth, tmp_path):
    overrides = {"optim.reference_param_groups": True, "eval.every": 2, "optim.poly_horizon": 4}
    train(load_config(tiny_config(synth), overrides), tmp_path / "straight")
    train(load_config(tiny_config(synth), {**overrides, "optim.iterations": 2}), tmp_path / "split")
    train(
        load_config(tiny_config(synth), overrides),
        tmp_path / "split",
        resume_from=tmp_path / "split" / "checkpoints" / "last.pt",
    )
    straight, split = (
        torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=False)
        for run in ("straight", "split")
    )
    assert sorted(set(straight["optimizer"]["param_groups"][0]["repeats"])) == [1, 3, 4]
    for key, value in straight["model"].items():
        assert torch.equal(value, split["model"][key]), key
