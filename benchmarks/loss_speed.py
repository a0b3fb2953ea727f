"""Time each target loss (forward + backward) on CPU, and on CUDA when available.

Usage: python benchmarks/loss_speed.py [--shape 1 19 512 1024] [--repeats 5]
Prints one table per device with the median milliseconds per forward+backward.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from msl.losses import TARGET_LOSS_NAMES, build_target_loss, multi_level_guidance_loss


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward_backward(
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    device: torch.device,
    repeats: int,
) -> float:
    """Median milliseconds of loss(main, aux).backward() after one warm-up run."""
    main_logits = torch.randn(shape, device=device, requires_grad=True)
    aux_logits = torch.randn(shape, device=device, requires_grad=True)
    timings = []
    for _ in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        loss_of(main_logits, aux_logits).backward()
        _synchronize(device)
        timings.append(1000 * (time.perf_counter() - start))
    return statistics.median(timings[1:])


def _on_main_head(
    loss: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A target loss in the (main, aux) signature of the guidance loss, ignoring the aux logits."""
    return lambda main_logits, aux_logits: loss(main_logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=int, nargs=4, default=(1, 19, 512, 1024), metavar=("B", "C", "H", "W")
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shape = tuple(args.shape)

    losses = {name: _on_main_head(build_target_loss(name)) for name in TARGET_LOSS_NAMES}
    losses["multi_guidance"] = multi_level_guidance_loss

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        print(
            f"\n{device.type} (torch {torch.__version__}, {torch.get_num_threads()} threads), logits {shape}"
        )
        print(f"{'loss':<16}{'ms':>10}")
        for name, loss_of in losses.items():
            print(f"{name:<16}{time_forward_backward(loss_of, shape, device, args.repeats):>10.1f}")


if __name__ == "__main__":
    main()
