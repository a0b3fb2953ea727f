"""Forward+backward time of one training step of the segmentation networks, printed as a table.

CPU: the benchmark network small_segnet and the older deeplab_resnet18_small (or the networks `--archs`
names) on the synthetic benchmark's batch (8, 3, 64, 128), in fp32 and bf16 autocast, in both memory layouts
(budget: 250 ms per step); with `--compile` also small_segnet under torch.compile (its first step, the
compilation, is printed apart).
CUDA, when available: DeepLab-v2 ResNet-101 on a (1, 3, 720, 1280) batch (a GTA5 crop) in fp32, bf16
autocast and channels_last. The step is both heads' cross-entropy, backward included; times
are medians after warm-up.

Usage: python benchmarks/model_speed.py [--repeats 10] [--threads 2] [--compile] [--archs small_segnet ...]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from msl.models import ARCH_NAMES, build_model

NUM_CLASSES = 19
WARMUP_STEPS = 3
CPU_BUDGET_MS = 250.0


def step_ms(
    arch: str,
    shape: tuple[int, int, int, int],
    device: str,
    dtype: torch.dtype | None,
    channels_last: bool,
    repeats: int,
    compiled: bool = False,
) -> tuple[float, float]:
    """Median milliseconds of forward + both heads' cross-entropy + backward (`dtype`: autocast dtype or
    None), and the first step's milliseconds (with `compiled`, torch.compile's compilation)."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(arch, NUM_CLASSES).to(device, memory_format=memory_format).train()
    if compiled:
        model = torch.compile(model)
    images = torch.randn(shape, device=device).contiguous(memory_format=memory_format)  # (B, 3, H, W)
    labels = torch.randint(0, NUM_CLASSES, (shape[0], *shape[2:]), device=device)  # (B, H, W)
    times = []
    for index in range(WARMUP_STEPS + repeats):
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext():
            main, aux = model(images)
            loss = F.cross_entropy(main.float(), labels) + F.cross_entropy(aux.float(), labels)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if index == 0:
            first = time.perf_counter() - start
        if index >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times), 1000.0 * first


def cases(
    archs: list[str], compiled: bool
) -> Iterator[tuple[str, tuple[int, int, int, int], str, torch.dtype | None, bool, bool]]:
    """(arch, input shape, device, autocast dtype, channels_last, compiled) of each measured row."""
    for arch in archs:
        for dtype in (None, torch.bfloat16):
            for channels_last in (False, True):
                yield arch, (8, 3, 64, 128), "cpu", dtype, channels_last, False
    if compiled:
        yield "small_segnet", (8, 3, 64, 128), "cpu", None, False, True
    if torch.cuda.is_available():
        for dtype, channels_last in (
            (None, False),
            (torch.bfloat16, False),
            (None, True),
            (torch.bfloat16, True),
        ):
            yield "deeplabv2_resnet101", (1, 3, 720, 1280), "cuda", dtype, channels_last, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per row (after warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--compile", action="store_true", help="also time small_segnet under torch.compile")
    parser.add_argument(
        "--archs",
        nargs="+",
        choices=ARCH_NAMES,
        default=["small_segnet", "deeplab_resnet18_small"],
        help="the CPU networks",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    print(
        f"torch {torch.__version__}, {args.threads} CPU threads, {device_name}, median of {args.repeats} "
        "steps"
    )
    header = (
        f"{'arch':<24} {'input':<18} {'device':<6} {'dtype':<9} {'layout':<23} {'fwd+bwd ms':>10} "
        f"{'first step ms':>13}"
    )
    print(header)
    print("-" * len(header))
    for arch, shape, device, dtype, channels_last, compiled in cases(args.archs, args.compile):
        ms, first_ms = step_ms(arch, shape, device, dtype, channels_last, args.repeats, compiled)
        dtype_name = "bf16" if dtype is torch.bfloat16 else "fp32"
        layout = ("channels_last" if channels_last else "contiguous") + (", compiled" if compiled else "")
        over = "  (over the 250 ms CPU budget)" if device == "cpu" and ms > CPU_BUDGET_MS else ""
        print(
            f"{arch:<24} {str(shape):<18} {device:<6} {dtype_name:<9} {layout:<23} {ms:>10.1f} "
            f"{first_ms:>13.0f}{over}"
        )


if __name__ == "__main__":
    main()
