"""Data-loading throughput at the paper's sizes, in images per second per worker process.

Use it to size `num_workers`: a worker delivers `1 / (ms per image)` images per second, so a GPU step of S
seconds at batch size B needs about `B / (S * images_per_s)` workers (plus headroom). Decoding, label mapping,
transforms and normalisation are timed separately in this process, which is what one DataLoader worker does
per item.

Cases (docs/datasets.md §5): GTA5 source training (1914x1052 PNG -> flip, resize to 1280x720, blur),
Cityscapes target training without labels (2048x1024 -> 1024x512) and Cityscapes evaluation (image to
1024x512, label kept at full resolution). The files are synthetic (smooth colour fields plus noise, blocky
label ids), written by this script to a temporary folder; real photos compress differently, so their decode
times differ somewhat.

    python benchmarks/loader_throughput.py --images 20 [--workers 2 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision import tv_tensors

from msl.data import build_dataset, build_loader, normalize
from msl.data.files import read_rgb


def synthetic_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """RGB `(H, W, 3)` uint8: a bicubically upsampled coarse colour field plus pixel noise."""
    coarse = rng.random((height // 16, width // 16, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)  # (H, W, 3)
    return np.clip(smooth * 200 + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)


def synthetic_label(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Cityscapes label ids `(H, W)` uint8 in blocks of 32x32 pixels."""
    ids = rng.choice([7, 8, 11, 21, 23, 24, 26, 0], size=(height // 32 + 1, width // 32 + 1))
    return np.kron(ids, np.ones((32, 32), dtype=np.int64))[:height, :width].astype(np.uint8)


def write_gta5(root: Path, count: int, rng: np.random.Generator) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(1, count + 1):
        cv2.imwrite(str(root / "images" / f"{i:05d}.png"), synthetic_image(rng, 1914, 1052)[:, :, ::-1])
        cv2.imwrite(str(root / "labels" / f"{i:05d}.png"), synthetic_label(rng, 1914, 1052))


def write_cityscapes(root: Path, count: int, rng: np.random.Generator) -> None:
    for split in ("train", "val"):
        image_dir, label_dir = root / "leftImg8bit" / split / "bench", root / "gtFine" / split / "bench"
        image_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        for i in range(count):
            stem = f"bench_{i:06d}_000019"
            cv2.imwrite(
                str(image_dir / f"{stem}_leftImg8bit.png"), synthetic_image(rng, 2048, 1024)[:, :, ::-1]
            )
            cv2.imwrite(str(label_dir / f"{stem}_gtFine_labelIds.png"), synthetic_label(rng, 2048, 1024))


def mean_ms(step: Callable[[int], object], count: int) -> float:
    step(0)  # warm-up: first-call allocations and lazy initialisation
    start = time.perf_counter()
    for i in range(count):
        step(i)
    return (time.perf_counter() - start) / count * 1e3


def stage_times(dataset, count: int) -> dict[str, float]:
    """Milliseconds per image of each stage and of a whole item, in this process."""
    samples = [dataset.samples[i % len(dataset)] for i in range(count)]
    rgbs = [read_rgb(s.image) for s in samples]
    pairs = [
        (torch.from_numpy(rgb).permute(2, 0, 1), torch.from_numpy(dataset.read_classes(s, rgb.shape[:2])))
        for s, rgb in zip(samples, rgbs, strict=True)
    ]

    def transform(i: int) -> None:
        image, label = tv_tensors.Image(pairs[i][0]), tv_tensors.Mask(pairs[i][1])
        if dataset.transform_label:
            dataset.transform(image, label)
        else:
            dataset.transform(image)

    resized = [dataset.transform(tv_tensors.Image(image)) for image, _ in pairs]
    return {
        "decode image": mean_ms(lambda i: read_rgb(samples[i].image), count),
        "decode+map label": mean_ms(lambda i: dataset.read_classes(samples[i], rgbs[i].shape[:2]), count),
        "transforms": mean_ms(transform, count),
        "normalise": mean_ms(lambda i: normalize(resized[i].as_subclass(torch.Tensor), "bgr_mean"), count),
        "whole item": mean_ms(lambda i: dataset[(i % len(dataset), i)], count),
    }


def loader_rate(dataset, workers: int, count: int) -> float:
    """Images per second through a DataLoader with `workers` processes (batch size 1)."""
    loader = build_loader(
        dataset, 1, shuffle=True, seed=0, num_workers=workers, drop_last=False, pin_memory=False
    )
    iterator = iter(loader)
    next(iterator)  # workers started and warm
    start = time.perf_counter()
    seen = sum(1 for _ in zip(range(count - 1), iterator, strict=False))
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20, help="files per case (and timed items per stage)")
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="also time DataLoaders with these")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what a DataLoader worker gets
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_gta5(Path(tmp) / "gta5", args.images, rng)
        write_cityscapes(Path(tmp) / "cityscapes", args.images, rng)
        print(f"wrote {3 * args.images} synthetic image/label pairs in {time.perf_counter() - start:.1f} s")
        cases = {
            "gta5 train 1914x1052->1280x720": build_dataset(
                "gta5", Path(tmp) / "gta5", "all", size=(1280, 720), train=True
            ),
            "cityscapes train, no labels, 2048x1024->1024x512": build_dataset(
                "cityscapes", Path(tmp) / "cityscapes", "train", size=(1024, 512), train=True, labels=False
            ),
            "cityscapes val, full-res label, 2048x1024->1024x512": build_dataset(
                "cityscapes", Path(tmp) / "cityscapes", "val", size=(1024, 512)
            ),
        }
        for case, dataset in cases.items():
            times = stage_times(dataset, args.images)
            print(f"\n{case}  ({args.images} images, 1 thread)")
            print(f"  {'stage':<18}{'ms/image':>10}{'images/s':>10}")
            for stage, ms in times.items():
                print(f"  {stage:<18}{ms:>10.1f}{1e3 / ms:>10.1f}")
            for workers in args.workers:
                rate = loader_rate(dataset, workers, args.images)
                print(f"  DataLoader with {workers} workers: {rate:.1f} images/s")


if __name__ == "__main__":
    main()
