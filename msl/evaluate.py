"""Evaluating a model: segmentation metrics on labelled data and label-free validators on unlabelled data.

Both accumulate on the model's device and read back once at the end. Predictions come from the main head,
optionally averaged with the horizontally flipped image's prediction (softmax averaged, as the reference's
`--flip`). Logits are upsampled to the label's size, so full-resolution labels are scored at full resolution.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from msl.config import EvalConfig
from msl.metrics import ConfusionMatrix, predicted_classes
from msl.models.base import TwoHeadNet, upsample_logits
from msl.objectives import VALIDATOR_MODES

VALIDATORS = tuple(VALIDATOR_MODES)  # the names and their directions: msl.config.VALIDATOR_MODES
SND_TEMPERATURE = 0.05  # Saito et al.'s tau
SND_PIXELS = EvalConfig.snd_pixels  # pixels SND samples by default: its similarity matrix is SND_PIXELS^2


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked for; a no-op context on the CPU."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def main_logits(model: TwoHeadNet, images: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """The main head's logits `(B, C, H, W)` in float32, upsampled to the input size as `model(images)`
    upsamples them, then to `size` if that differs. The aux head is not upsampled: evaluation never reads
    it."""
    logits = upsample_logits(model.forward_logits(images)[0], tuple(images.shape[-2:])).float()
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
    return logits


@torch.no_grad()
def predict_probs(
    model: TwoHeadNet, images: Tensor, size: tuple[int, int] | None = None, flip: bool = False
) -> Tensor:
    """Softmax of the main head `(B, C, H, W)` at `size` (default: the input size), in float32."""
    probs = main_logits(model, images, size).softmax(dim=1)
    if flip:
        flipped = predict_probs(model, images.flip(-1), size=size).flip(-1)
        probs = (probs + flipped) / 2
    return probs


def evaluate(
    model: TwoHeadNet,
    batches: Iterable,
    num_classes: int,
    device: torch.device,
    *,
    flip: bool = False,
    bf16: bool = True,
    channels_last: bool = False,
    on_prediction: Callable[[Tensor, list[str]], None] | None = None,
) -> dict:
    """Metrics of `msl.metrics.ConfusionMatrix.compute` over batches of `(images, labels, names)`.

    `on_prediction(predictions (B, H, W), names)` sees every prediction (e.g. to save it as a PNG)."""
    model.eval()
    matrix = ConfusionMatrix(num_classes, device=device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, labels, names in batches:
        images = images.to(device, non_blocking=True, memory_format=memory_format)  # (B, 3, H, W)
        labels = labels.to(device, non_blocking=True)  # (B, H_label, W_label)
        size = tuple(labels.shape[-2:])
        with autocast(device, bf16):  # the softmax changes no argmax: it is taken only to average flips
            scores = predict_probs(model, images, size, flip) if flip else main_logits(model, images, size)
        predictions = predicted_classes(scores)  # (B, H_label, W_label)
        matrix.update(predictions, labels)
        if on_prediction is not None:
            on_prediction(predictions, list(names))
    return matrix.compute()


def soft_neighbourhood_density(probs: Tensor, temperature: float = SND_TEMPERATURE) -> Tensor:
    """SND (Saito et al., "Tune it the Right Way: Unsupervised Validation of Domain Adaptation via Soft
    Neighborhood Density", ICCV 2021) of `probs` (N, C), the softmax vectors of N samples:

        f_i = p_i / ||p_i||,  s_ij = f_i . f_j / tau  (j != i),  q_ij = exp(s_ij) / sum_{k != i} exp(s_ik),
        SND = (1 / N) sum_i H(q_i) = -(1 / N) sum_i sum_{j != i} q_ij log q_ij.

    Higher is better: each prediction has many close neighbours, i.e. the predictions form dense clusters.
    Note: identical predictions for every sample (e.g. all uniform) reach the maximum, log(N - 1). A scalar
    tensor. Computed in float32 (half the time of float64 on the CPU, which a study's every evaluation pays;
    the two differ by ~1e-7 relative), the mean in float64.
    """
    features = F.normalize(probs.float(), dim=1)  # (N, C)
    similarity = features @ features.T / temperature  # (N, N)
    similarity.fill_diagonal_(-math.inf)  # no sample is its own neighbour
    neighbours = similarity.softmax(dim=1)  # (N, N), zero on the diagonal
    return torch.special.entr(neighbours).sum(dim=1).double().mean()


def batch_nuclear_norm(gram: Tensor, count: int) -> Tensor:
    """BNM (Cui et al., "Towards Discriminability and Diversity: Batch Nuclear-norm Maximization under Label
    Insufficient Situations", CVPR 2020) as a validator: ||P||_* / N for the (N, C) softmax matrix P of N
    pixels.

    Taken from the (C, C) Gram matrix `gram` = P^T P, accumulated over the pixels: the singular values of P
    are the square roots of the eigenvalues of P^T P, so ||P||_* = sum_k sqrt(lambda_k). Higher is better:
    confident predictions (large singular values) spread over many classes (many of them). A scalar tensor."""
    eigenvalues = torch.linalg.eigvalsh(gram.double()).clamp(min=0)  # (C,)
    return eigenvalues.sqrt().sum() / count


class LabelFreeValidators:
    """Validators computed from predictions alone, accumulated on the device over batches of softmax maps
    (no host sync until `compute`):

    * `target_entropy`: mean pixel entropy H(p) (nats);
    * `target_im`: information maximisation, mean H(p) minus the entropy of the mean prediction H(mean p):
      low when pixels are confident yet the classes stay diverse (lower is better);
    * `target_max_square`: mean of sum_c p_c^2 per pixel (higher is more confident);
    * `target_snd`: `soft_neighbourhood_density` of a fixed, seeded sample of `snd_pixels` pixels (its cost
      is quadratic): ceil(snd_pixels / num_images) pixels drawn without replacement from each image, then, if
      more, snd_pixels of those (higher is better);
    * `target_bnm`: `batch_nuclear_norm` over every pixel (higher is better).

    With `probs_size` ([width, height]) it also keeps each image's softmax map area-downsampled to that size
    in float16, for the study-level validators (`low_res_probs`).
    """

    def __init__(
        self,
        device: torch.device,
        *,
        num_images: int | None = None,
        probs_size: tuple[int, int] | list[int] | None = None,
        seed: int = 0,
        snd_pixels: int = SND_PIXELS,
    ):
        self.device = device
        self.snd_pixels = snd_pixels
        self.per_image = snd_pixels if num_images is None else -(-snd_pixels // num_images)
        self.generator = torch.Generator().manual_seed(seed)
        self.probs_size = None if probs_size is None else (int(probs_size[1]), int(probs_size[0]))  # (h, w)
        self.entropy_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.square_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.class_mass: Tensor | None = None  # (C,) summed probabilities
        self.gram: Tensor | None = None  # (C, C) sum over pixels of p p^T
        self.samples: list[Tensor] = []  # (K, C) each: the pixels SND samples
        self.low_res: list[Tensor] = []  # (B, C, h, w) float16 each
        self.pixels = 0

    def update(self, probs: Tensor) -> None:
        """Add a batch of softmax maps `probs` (B, C, H, W)."""
        batch, classes, height, width = probs.shape
        self.entropy_sum = self.entropy_sum + torch.special.entr(probs).sum(dtype=torch.float64)
        self.square_sum = self.square_sum + probs.square().sum(dtype=torch.float64)
        mass = probs.sum(dim=(0, 2, 3), dtype=torch.float64)  # (C,)
        self.class_mass = mass if self.class_mass is None else self.class_mass + mass
        flat = probs.float().permute(0, 2, 3, 1).reshape(-1, classes)  # (B*H*W, C)
        gram = (flat.T @ flat).double()  # (C, C)
        self.gram = gram if self.gram is None else self.gram + gram
        per_image = min(self.per_image, height * width)
        index = torch.stack(
            [torch.randperm(height * width, generator=self.generator)[:per_image] for _ in range(batch)]
        )  # (B, K)
        index = index + torch.arange(batch)[:, None] * (height * width)  # rows of `flat`
        self.samples.append(flat[index.flatten().to(self.device, non_blocking=True)])  # (B*K, C)
        if self.probs_size is not None:
            self.low_res.append(F.interpolate(probs.float(), size=self.probs_size, mode="area").half())
        self.pixels += batch * height * width

    def compute(self) -> dict[str, float]:
        """Each validator's value (NaN for all when no image was seen); reads back to the host once."""
        if self.class_mass is None or self.gram is None:
            return {name: math.nan for name in VALIDATORS}
        samples = torch.cat(self.samples)  # (N, C)
        if len(samples) > self.snd_pixels:
            samples = samples[
                torch.randperm(len(samples), generator=self.generator)[: self.snd_pixels].to(self.device)
            ]
        mean_entropy = self.entropy_sum / self.pixels
        values = torch.stack(
            [
                mean_entropy,
                mean_entropy - torch.special.entr(self.class_mass / self.pixels).sum(),
                self.square_sum / self.pixels,
                soft_neighbourhood_density(samples),
                batch_nuclear_norm(self.gram, self.pixels),
            ]
        ).tolist()
        return dict(zip(VALIDATORS, values, strict=True))

    def low_res_probs(self) -> Tensor | None:
        """(N, C, h, w) float16 on the CPU: every image's downsampled softmax, or None without
        `probs_size`."""
        return torch.cat(self.low_res).cpu() if self.low_res else None


def label_free_validators(
    model: TwoHeadNet,
    images_batches: Iterable[Tensor],
    device: torch.device,
    *,
    num_images: int | None = None,
    probs_size: tuple[int, int] | list[int] | None = None,
    snd_pixels: int = SND_PIXELS,
    flip: bool = False,
    bf16: bool = True,
    channels_last: bool = False,
) -> LabelFreeValidators:
    """`LabelFreeValidators` of the model's predictions on every image of `images_batches` ((B, 3, H, W)
    each)."""
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    validators = LabelFreeValidators(
        device, num_images=num_images, probs_size=probs_size, snd_pixels=snd_pixels
    )
    for images in images_batches:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        with autocast(device, bf16):
            probs = predict_probs(model, images, flip=flip)  # (B, C, H, W)
        validators.update(probs)
    return validators
