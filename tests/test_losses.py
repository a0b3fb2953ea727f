"""Target losses against the golden values of docs/losses.md §1.8, closed-form gradients and a slow
pixel-by-pixel implementation written here with plain Python loops and math.exp/log."""

from __future__ import annotations

import math

import pytest
import torch

from msl.losses import (
    TARGET_LOSS_NAMES,
    TARGET_LOSSES,
    build_target_loss,
    entropy_loss,
    hard_pseudo_label_loss,
    image_wise_weights,
    iw_entropy_loss,
    iw_max_square_loss,
    max_square_loss,
    multi_level_guidance_loss,
    target_loss,
)

# docs/losses.md §1.8: B=1, C=3, H=1, W=4; rows are pixels, columns classes.
GOLDEN_P1 = [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]
GOLDEN_P2 = [[0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.3, 0.3, 0.4]]


def logits_of(pixel_probs: list[list[float]]) -> torch.Tensor:
    """Logits (1, C, 1, W) = log p, so that softmax gives back the per-pixel probabilities exactly."""
    return torch.tensor(pixel_probs, dtype=torch.float64).log().T.reshape(1, len(pixel_probs[0]), 1, -1)


def random_logits(batch: int, classes: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, classes, 5, 7, generator=generator, dtype=torch.float64)


# ---------------------------------------------------------------- slow reference, one pixel at a time


def slow_pixel_probs(logits: torch.Tensor) -> list[list[list[list[float]]]]:
    """probs[b][h][w][c] by math.exp, with the max subtracted for stability."""
    z = logits.tolist()
    batch, classes, height, width = logits.shape
    probs = []
    for b in range(batch):
        image = []
        for h in range(height):
            row = []
            for w in range(width):
                top = max(z[b][c][h][w] for c in range(classes))
                exps = [math.exp(z[b][c][h][w] - top) for c in range(classes)]
                total = sum(exps)
                row.append([e / total for e in exps])
            image.append(row)
        probs.append(image)
    return probs


def slow_argmax(values: list[float]) -> int:
    best = 0
    for c in range(1, len(values)):
        if values[c] > values[best]:
            best = c
    return best


def slow_weights(probs, ratio: float) -> list[list[list[float]]]:
    """Per-pixel IW weights by counting each image's predicted classes separately."""
    weights = []
    for image in probs:
        pixels = [p for row in image for p in row]
        classes = len(pixels[0])
        counts = [0] * classes
        for p in pixels:
            counts[slow_argmax(p)] += 1
        class_weight = [1.0 / max(n**ratio * len(pixels) ** (1 - ratio), 1.0) for n in counts]
        weights.append([[class_weight[slow_argmax(p)] for p in row] for row in image])
    return weights


def slow_pixels(probs):
    """Yield (b, h, w, p) over all pixels."""
    for b, image in enumerate(probs):
        for h, row in enumerate(image):
            for w, p in enumerate(row):
                yield b, h, w, p


def slow_max_square(logits, **_) -> float:
    probs = slow_pixel_probs(logits)
    elements = logits.numel()
    return -sum(q * q for *_, p in slow_pixels(probs) for q in p) / (2 * elements)


def slow_iw_max_square(logits, ratio: float, **_) -> float:
    probs = slow_pixel_probs(logits)
    weights = slow_weights(probs, ratio)
    total = sum(weights[b][h][w] * sum(q * q for q in p) for b, h, w, p in slow_pixels(probs))
    return -total / (logits.shape[0] * logits.shape[1])


def slow_entropy(logits, **_) -> float:
    probs = slow_pixel_probs(logits)
    return -sum(q * math.log(q) for *_, p in slow_pixels(probs) for q in p) / logits.numel()


def slow_iw_entropy(logits, ratio: float, **_) -> float:
    probs = slow_pixel_probs(logits)
    weights = slow_weights(probs, ratio)
    total = sum(-weights[b][h][w] * sum(q * math.log(q) for q in p) for b, h, w, p in slow_pixels(probs))
    return total / (logits.shape[0] * logits.shape[1])


def slow_hard(logits, threshold: float) -> float:
    probs = list(slow_pixels(slow_pixel_probs(logits)))
    losses = [-math.log(max(p)) for *_, p in probs if max(p) > threshold]
    assert 0 < len(losses) < len(probs), "the random case must keep some pixels and drop others"
    return sum(losses) / len(losses)


def slow_guidance(main_logits, aux_logits, threshold: float) -> float:
    main_probs, aux_probs = slow_pixel_probs(main_logits), slow_pixel_probs(aux_logits)
    losses = []
    for b, h, w, aux in slow_pixels(aux_probs):
        main = main_probs[b][h][w]
        if max(main) > threshold or max(aux) > threshold:
            label = slow_argmax([(m + a) / 2 for m, a in zip(main, aux, strict=True)])
            losses.append(-math.log(aux[label]))
    assert 0 < len(losses) < aux_logits.numel() // aux_logits.shape[1], "need kept and dropped pixels"
    return sum(losses) / len(losses)


# ---------------------------------------------------------------- golden values (docs/losses.md §1.8)


def test_golden_max_square():
    assert max_square_loss(logits_of(GOLDEN_P1)).item() == pytest.approx(-0.0875, abs=1e-6)


@pytest.mark.parametrize("ratio, expected", [(0.0, -0.175), (0.2, -0.216680), (1.0, -0.533333)])
def test_golden_iw_max_square(ratio, expected):
    assert iw_max_square_loss(logits_of(GOLDEN_P1), ratio).item() == pytest.approx(expected, abs=1e-6)


def test_golden_image_wise_weights():
    weights = image_wise_weights(logits_of(GOLDEN_P1), ratio=0.2).flatten().tolist()
    assert weights == pytest.approx([0.287175, 0.287175, 0.329877, 0.329877], abs=1e-6)


def test_golden_entropy():
    assert entropy_loss(logits_of(GOLDEN_P1)).item() == pytest.approx(0.274089, abs=1e-6)


@pytest.mark.parametrize("ratio, expected", [(0.0, 0.274089), (0.2, 0.337468)])
def test_golden_iw_entropy(ratio, expected):
    assert iw_entropy_loss(logits_of(GOLDEN_P1), ratio).item() == pytest.approx(expected, abs=1e-6)


def test_golden_hard():
    assert hard_pseudo_label_loss(logits_of(GOLDEN_P1), 0.65).item() == pytest.approx(0.289909, abs=1e-6)


def test_golden_guidance():
    loss = multi_level_guidance_loss(logits_of(GOLDEN_P1), logits_of(GOLDEN_P2), 0.65)
    assert loss.item() == pytest.approx(0.751265, abs=1e-6)
    assert (0.1 * 0.09 * loss).item() == pytest.approx(0.0067614, abs=1e-7)


def test_hard_threshold_is_strict():
    two_class_tie = torch.zeros(1, 2, 1, 1)  # max p is exactly 0.5
    assert hard_pseudo_label_loss(two_class_tie, 0.5).item() == 0.0
    assert hard_pseudo_label_loss(two_class_tie, 0.49).item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------- identities


@pytest.mark.parametrize("batch", [1, 3])
def test_iw_max_square_at_ratio_zero_is_twice_max_square(batch):
    logits = random_logits(batch, 19, seed=1)
    assert iw_max_square_loss(logits, 0.0).item() == pytest.approx(
        2 * max_square_loss(logits).item(), rel=1e-6
    )


@pytest.mark.parametrize("batch", [1, 3])
def test_iw_entropy_at_ratio_zero_is_entropy(batch):
    logits = random_logits(batch, 19, seed=2)
    assert iw_entropy_loss(logits, 0.0).item() == pytest.approx(entropy_loss(logits).item(), rel=1e-6)


# -------------------------------------------------- gradients against closed forms (docs/losses.md §1.1-§1.3)


def logits_with_grad(batch: int = 2, classes: int = 5, seed: int = 3) -> torch.Tensor:
    return random_logits(batch, classes, seed).float().requires_grad_()


def test_max_square_gradient():
    logits = logits_with_grad()
    max_square_loss(logits).backward()
    p = logits.detach().softmax(1)
    expected = -p * (p - p.pow(2).sum(1, keepdim=True)) / logits.numel()
    torch.testing.assert_close(logits.grad, expected)


def test_iw_max_square_gradient_treats_weights_as_constants():
    logits = logits_with_grad()
    iw_max_square_loss(logits, 0.2).backward()
    p = logits.detach().softmax(1)
    weights = image_wise_weights(logits, 0.2).unsqueeze(1)  # (B, 1, H, W)
    batch, classes = logits.shape[:2]
    expected = -2 * weights / (batch * classes) * p * (p - p.pow(2).sum(1, keepdim=True))
    torch.testing.assert_close(logits.grad, expected)


def test_entropy_gradient_flows_through_both_factors():
    logits = logits_with_grad()
    entropy_loss(logits).backward()
    p = logits.detach().softmax(1)
    entropy = -(p * p.log()).sum(1, keepdim=True)
    expected = -p * (p.log() + entropy) / logits.numel()
    torch.testing.assert_close(logits.grad, expected)


# ---------------------------------------------------------------- image-wise weights


def test_image_wise_weights_carry_no_gradient():
    weights = image_wise_weights(logits_with_grad(), 0.2)
    assert not weights.requires_grad and weights.grad_fn is None


def test_image_wise_weights_are_per_image():
    first = random_logits(1, 5, seed=4)
    second = random_logits(1, 5, seed=5, scale=0.5)
    second[:, 2] += 1.0  # skew the second image's class histogram
    together = image_wise_weights(torch.cat([first, second]), 0.2)
    alone = torch.cat([image_wise_weights(first, 0.2), image_wise_weights(second, 0.2)])
    torch.testing.assert_close(together, alone)
    assert not torch.equal(alone[0], alone[1])


@pytest.mark.parametrize("ratio", [0.0, 0.2, 1.0])
def test_empty_classes_give_finite_weights(ratio):
    logits = torch.zeros(2, 6, 3, 4)
    logits[:, 0] = 5.0  # every pixel predicts class 0; classes 1..5 are empty
    weights = image_wise_weights(logits, ratio)
    torch.testing.assert_close(weights, torch.full((2, 3, 4), 1 / 12))
    for loss in (iw_max_square_loss, iw_entropy_loss):
        assert torch.isfinite(loss(logits, ratio))


# ---------------------------------------------------------------- fast vs slow loops


FAST_AND_SLOW = {
    "maxsquare": (max_square_loss, slow_max_square, {}),
    "iw_maxsquare": (iw_max_square_loss, slow_iw_max_square, {"ratio": 0.2}),
    "iw_maxsquare_balanced": (iw_max_square_loss, slow_iw_max_square, {"ratio": 1.0}),
    "entropy": (entropy_loss, slow_entropy, {}),
    "iw_entropy": (iw_entropy_loss, slow_iw_entropy, {"ratio": 0.2}),
}


@pytest.mark.parametrize("name", FAST_AND_SLOW)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("classes", [13, 16, 19])
def test_loss_matches_slow_loops(name, batch, classes):
    fast, slow, options = FAST_AND_SLOW[name]
    logits = random_logits(batch, classes, seed=10 * batch + classes)
    expected = slow(logits, **options)
    assert fast(logits.float(), **options).item() == pytest.approx(expected, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("classes", [13, 16, 19])
def test_guidance_matches_slow_loops(batch, classes):
    main_logits = random_logits(batch, classes, seed=batch + classes)
    aux_logits = random_logits(batch, classes, seed=100 + batch + classes)
    expected = slow_guidance(main_logits, aux_logits, threshold=0.6)
    loss = multi_level_guidance_loss(main_logits.float(), aux_logits.float(), 0.6)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("classes", [13, 16, 19])
def test_hard_matches_slow_loops(batch, classes):
    logits = random_logits(batch, classes, seed=200 + batch + classes)
    expected = slow_hard(logits, threshold=0.6)
    assert hard_pseudo_label_loss(logits.float(), 0.6).item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- empty masks, dtypes, registry


def test_no_confident_pixel_gives_zero_with_finite_gradient():
    main_logits = torch.zeros(2, 4, 3, 3, requires_grad=True)  # uniform p = 0.25 < τ everywhere
    aux_logits = torch.zeros(2, 4, 3, 3, requires_grad=True)
    losses = [
        hard_pseudo_label_loss(main_logits, 0.95),
        multi_level_guidance_loss(main_logits, aux_logits, 0.95),
    ]
    for loss in losses:
        assert loss.item() == 0.0 and loss.grad_fn is not None
    sum(losses).backward()
    for grad in (main_logits.grad, aux_logits.grad):
        assert grad is not None and torch.equal(grad, torch.zeros_like(grad))


def test_guidance_only_reaches_the_aux_head():
    main_logits, aux_logits = logits_with_grad(seed=6), logits_with_grad(seed=7)
    multi_level_guidance_loss(main_logits, aux_logits, 0.3).backward()
    assert main_logits.grad is None
    assert aux_logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", TARGET_LOSS_NAMES)
def test_bf16_logits_are_computed_in_float32(name):
    logits = random_logits(2, 7, seed=8).to(torch.bfloat16)
    loss = target_loss(name, logits, ratio=0.2, threshold=0.5)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(target_loss(name, logits.float(), ratio=0.2, threshold=0.5).item())


def test_registry_names():
    assert set(TARGET_LOSS_NAMES) == {"none", "entropy", "iw_entropy", "maxsquare", "iw_maxsquare", "hard"}
    assert tuple(TARGET_LOSSES) == TARGET_LOSS_NAMES
    with pytest.raises(ValueError, match="unknown target loss"):
        build_target_loss("IW_maxsquare")


@pytest.mark.parametrize("name", TARGET_LOSS_NAMES)
def test_registry_loss_is_finite_scalar_with_gradient(name):
    logits = logits_with_grad(seed=9)
    loss = build_target_loss(name, ratio=0.2, threshold=0.5)(logits)
    assert loss.shape == () and torch.isfinite(loss) and loss.grad_fn is not None
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_registry_binds_ratio_and_threshold():
    logits = random_logits(2, 7, seed=11)
    assert target_loss("iw_maxsquare", logits, ratio=1.0).item() == pytest.approx(
        iw_max_square_loss(logits, 1.0).item()
    )
    assert target_loss("hard", logits, threshold=0.4).item() == pytest.approx(
        hard_pseudo_label_loss(logits, 0.4).item()
    )
    assert target_loss("none", logits).item() == 0.0
