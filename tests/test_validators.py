"""Label-free validators (msl.evaluate) against slow naive loops on tiny inputs, and cases each one ranks
correctly by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from msl.config import load_config
from msl.evaluate import (
    SND_PIXELS,
    VALIDATORS,
    LabelFreeValidators,
    batch_nuclear_norm,
    label_free_validators,
    soft_neighbourhood_density,
)
from msl.models.base import TwoHeadNet
from msl.probs_maps import load_probs, save_probs, saved_iterations


def naive_snd(probs: np.ndarray, tau: float = 0.05) -> float:
    """Saito et al.'s SND written out with loops: normalise, similarities to the others / tau, softmax,
    entropy."""
    n = len(probs)
    features = [p / math.sqrt(sum(v * v for v in p)) for p in probs]
    total = 0.0
    for i in range(n):
        scores = [
            sum(a * b for a, b in zip(features[i], features[j], strict=True)) / tau
            for j in range(n)
            if j != i
        ]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        q = [w / sum(weights) for w in weights]
        total += -sum(v * math.log(v) for v in q if v > 0)
    return total / n


def naive_bnm(probs: np.ndarray) -> float:
    """Nuclear norm of the (pixels x classes) matrix by numpy's SVD, divided by the pixel count."""
    return float(np.linalg.svd(probs, compute_uv=False).sum()) / len(probs)


def naive_validators(maps: np.ndarray) -> dict[str, float]:
    """entropy, IM and max-square by loops over the pixels of (B, C, H, W) softmax maps."""
    pixels = [
        maps[b, :, y, x]
        for b in range(maps.shape[0])
        for y in range(maps.shape[2])
        for x in range(maps.shape[3])
    ]
    entropy = [-sum(p * math.log(p) for p in pixel if p > 0) for pixel in pixels]
    mean = [sum(pixel[c] for pixel in pixels) / len(pixels) for c in range(maps.shape[1])]
    return {
        "target_entropy": sum(entropy) / len(pixels),
        "target_im": sum(entropy) / len(pixels) + sum(m * math.log(m) for m in mean if m > 0),
        "target_max_square": sum(sum(p * p for p in pixel) for pixel in pixels) / len(pixels),
        "target_bnm": naive_bnm(np.array(pixels)),
    }


def softmax_maps(shape, seed: int, sharpness: float = 3.0) -> torch.Tensor:
    logits = (
        torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * sharpness
    )
    return logits.softmax(dim=1).float()  # (B, C, H, W)


def test_snd_matches_the_naive_loop():
    probs = softmax_maps((12, 5), seed=0)  # (N, C)
    assert soft_neighbourhood_density(probs).item() == pytest.approx(
        naive_snd(probs.double().numpy()), rel=1e-6
    )


def test_bnm_from_the_gram_matrix_matches_the_svd():
    probs = softmax_maps((40, 6), seed=1).double()  # (N, C)
    assert batch_nuclear_norm(probs.T @ probs, len(probs)).item() == pytest.approx(
        naive_bnm(probs.numpy()), rel=1e-9
    )


def test_accumulated_validators_match_naive_loops_over_batches():
    maps = softmax_maps((3, 4, 5, 6), seed=2)  # (B, C, H, W): 90 pixels, all sampled by SND
    validators = LabelFreeValidators(torch.device("cpu"), num_images=3)
    validators.update(maps[:2])
    validators.update(maps[2:])
    values = validators.compute()
    assert list(values) == list(VALIDATORS)
    for name, expected in naive_validators(maps.double().numpy()).items():
        assert values[name] == pytest.approx(expected, rel=1e-6), name
    every_pixel = (
        maps.double().permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    )  # SND's sample order does not matter
    assert values["target_snd"] == pytest.approx(naive_snd(every_pixel), rel=1e-6)


def test_snd_sample_is_fixed_by_the_seed_and_bounded():
    maps = softmax_maps((3, 4, 48, 48), seed=3)  # 6912 pixels > SND_PIXELS
    first, again = (LabelFreeValidators(torch.device("cpu"), num_images=3) for _ in range(2))
    for validators in (first, again):
        validators.update(maps)
    assert sum(len(sample) for sample in first.samples) == 3 * math.ceil(SND_PIXELS / 3)
    assert first.compute()["target_snd"] == again.compute()["target_snd"]
    other = LabelFreeValidators(torch.device("cpu"), num_images=3, seed=1)
    other.update(maps)
    assert other.compute()["target_snd"] != first.compute()["target_snd"]


def test_snd_samples_eval_snd_pixels(monkeypatch):
    """`eval.snd_pixels` sets how many pixels SND compares (its cost is their square)."""
    import msl.evaluate

    seen = []
    density = msl.evaluate.soft_neighbourhood_density
    monkeypatch.setattr(
        msl.evaluate, "soft_neighbourhood_density", lambda p: seen.append(len(p)) or density(p)
    )
    validators = LabelFreeValidators(torch.device("cpu"), num_images=3, snd_pixels=100)
    validators.update(softmax_maps((3, 4, 48, 48), seed=3))
    assert sum(len(sample) for sample in validators.samples) == 3 * 34
    validators.compute()
    assert seen == [100] and load_config(None, {"eval.snd_pixels": 100}).eval.snd_pixels == 100


def one_hot_maps(classes: np.ndarray, num_classes: int, confidence: float) -> torch.Tensor:
    """(1, C, 1, N) maps whose pixel i puts `confidence` on classes[i] and spreads the rest evenly."""
    probs = np.full((len(classes), num_classes), (1 - confidence) / (num_classes - 1))
    probs[np.arange(len(classes)), classes] = confidence
    return torch.tensor(probs, dtype=torch.float32).T[None, :, None, :]


def values_of(maps: torch.Tensor) -> dict[str, float]:
    validators = LabelFreeValidators(torch.device("cpu"))
    validators.update(maps)
    return validators.compute()


def test_bnm_ranks_confident_and_diverse_above_uniform_and_collapsed():
    balanced = np.arange(60) % 6
    diverse = values_of(one_hot_maps(balanced, 6, 0.95))["target_bnm"]
    uniform = values_of(torch.full((1, 6, 1, 60), 1 / 6))["target_bnm"]
    collapsed = values_of(one_hot_maps(np.zeros(60, dtype=int), 6, 0.95))["target_bnm"]
    assert diverse > collapsed > uniform
    assert diverse == pytest.approx(math.sqrt(6 / 60), rel=0.1)  # one-hot, balanced: sqrt(C N) / N


def test_snd_ranks_dense_clusters_above_scattered_predictions():
    rng = np.random.default_rng(0)
    clustered = one_hot_maps(np.arange(64) % 2, 6, 0.9)  # two tight clusters
    scattered = torch.tensor(rng.dirichlet(np.ones(6), size=64).T, dtype=torch.float32)[None, :, None, :]
    assert values_of(clustered)["target_snd"] > values_of(scattered)["target_snd"]


def test_low_res_probs_are_area_downsampled_float16_and_round_trip_through_npy(tmp_path):
    maps = softmax_maps((2, 3, 8, 16), seed=4)
    validators = LabelFreeValidators(torch.device("cpu"), probs_size=[4, 2])
    validators.update(maps)
    low = validators.low_res_probs()
    assert low.shape == (2, 3, 2, 4) and low.dtype == torch.float16
    assert low[1, 2, 1, 3].item() == pytest.approx(maps[1, 2, 4:, 12:].mean().item(), abs=1e-3)
    save_probs(tmp_path, 30, low.numpy())
    assert list(saved_iterations(tmp_path)) == [30]
    assert np.array_equal(load_probs(saved_iterations(tmp_path)[30]), low.float().numpy())


def test_label_free_validators_run_a_model_over_batches():
    class Fixed(TwoHeadNet):
        def forward_logits(self, images):  # (B, 3, H, W) -> main and aux logits (B, 2, H, W)
            logits = torch.cat([images[:, :1], -images[:, :1]], dim=1)
            return logits, logits

    images = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    result = label_free_validators(
        Fixed(), [images[:2], images[2:]], torch.device("cpu"), num_images=4, bf16=False
    )
    probs = torch.cat([images[:, :1], -images[:, :1]], dim=1).softmax(dim=1)
    expected = naive_validators(probs.double().numpy())
    assert result.compute()["target_bnm"] == pytest.approx(expected["target_bnm"], rel=1e-6)
