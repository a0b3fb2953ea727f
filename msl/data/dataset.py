"""Segmentation datasets in their real on-disk formats: items `(image, label, name)`.

`build_dataset` is the one entry point; `msl.data.formats` says where each dataset keeps its files.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from msl.data.files import DatasetError, read_rgb
from msl.data.formats import LabelEncoding, Sample, get_format
from msl.data.transforms import NORMALIZATIONS, build_transform, normalize
from msl.labels import IGNORE_INDEX, check_num_classes

ItemKey = int | tuple[int, int]


@contextlib.contextmanager
def _torch_rng_seeded(seed: int | None) -> Iterator[None]:
    """Run the body with torch's CPU generator seeded by `seed`, restored afterwards (None: left alone)."""
    if seed is None:
        yield
        return
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(
        seed
    )  # not torch.manual_seed: that also seeds accelerators, 40x slower
    try:
        yield
    finally:
        torch.set_rng_state(state)


class DecodedCache:
    """Decoded images and class maps kept in memory, least recently used out past `budget` bytes: one per
    process (`decoded_cache`), so the runs one process trains in turn (a study's reused trial workers) decode
    each file once. An entry is keyed by its files' paths, sizes and modification times, so a rewritten file
    is read again."""

    def __init__(self) -> None:
        self.budget = 0
        self.used = 0
        self.entries: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    @staticmethod
    def key(sample: Sample, num_classes: int, strict: bool) -> tuple:
        paths = (sample.image,) if sample.label is None else (sample.image, sample.label)
        files = tuple((str(path), (stat := os.stat(path)).st_size, stat.st_mtime_ns) for path in paths)
        return (files, num_classes, strict)

    def get(self, key: tuple) -> tuple[np.ndarray, np.ndarray] | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: tuple, rgb: np.ndarray, classes: np.ndarray) -> None:
        size = rgb.nbytes + classes.nbytes
        if size > self.budget:
            return
        self.entries[key] = (rgb, classes)
        self.used += size
        while self.used > self.budget:
            _, (old_rgb, old_classes) = self.entries.popitem(last=False)
            self.used -= old_rgb.nbytes + old_classes.nbytes


_DECODED = DecodedCache()


def decoded_cache(budget_mb: int) -> DecodedCache | None:
    """The process's `DecodedCache`, its budget raised to `budget_mb` MiB if lower; None for 0 (no cache)."""
    if budget_mb <= 0:
        return None
    _DECODED.budget = max(_DECODED.budget, budget_mb * 2**20)
    return _DECODED


class SegmentationDataset(Dataset):
    """Images with class-index labels, decoded, transformed and normalised on access.

    An item is `(image, label, name)`: image float32 `(3, H, W)` normalised, label int64 `(H', W')` with
    values 0..C-1 and 255 (ignore), name the file stem. Samples without a label file (labels not asked for, or
    a split that has none) get an all-ignore label: their label files are never opened.

    Indexing with `(index, seed)` makes the random augmentation a function of the seed alone (the loader's
    sampler passes such keys); a plain index draws from torch's global generator.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        encoding: LabelEncoding,
        num_classes: int,
        transform: v2.Transform,
        *,
        transform_label: bool,
        normalization: str,
        strict_labels: bool = True,
        cache: DecodedCache | None = None,
    ) -> None:
        self.samples = list(samples)
        self.cache = cache
        self.encoding = encoding
        self.num_classes = num_classes
        self.transform = transform
        self.transform_label = transform_label
        self.normalization = normalization
        self.strict_labels = strict_labels

    def __len__(self) -> int:
        return len(self.samples)

    def read_classes(self, sample: Sample, image_hw: tuple[int, int]) -> np.ndarray:
        """Class indices `(H, W)` uint8 of a sample's label, all-ignore when it has none; sizes must agree."""
        if sample.label is None:
            return np.full(image_hw, IGNORE_INDEX, dtype=np.uint8)
        classes = self.encoding.read_classes(sample.label, self.num_classes, self.strict_labels)  # (H, W)
        check_sizes_agree(sample, image_hw, classes.shape)
        return classes

    def __getitem__(self, key: ItemKey) -> tuple[torch.Tensor, torch.Tensor, str]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        rgb, classes = self.decoded(self.samples[index])  # (H, W, 3), (H, W)
        image = tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1))  # (3, H, W) uint8
        label = tv_tensors.Mask(torch.from_numpy(classes))  # (H, W) uint8
        with _torch_rng_seeded(seed):
            if self.transform_label:
                image, label = self.transform(image, label)
            else:
                image = self.transform(image)
        return (
            normalize(image.as_subclass(torch.Tensor), self.normalization),
            label.as_subclass(torch.Tensor).long(),
            self.samples[index].name,
        )

    def decoded(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """The sample's image `(H, W, 3)` uint8 RGB and class map `(H, W)` uint8, from the cache when it has
        them (copies: the transforms may write into what they are given)."""
        if self.cache is None:
            rgb = read_rgb(sample.image)
            return rgb, self.read_classes(sample, rgb.shape[:2])
        key = self.cache.key(sample, self.num_classes, self.strict_labels)
        if (entry := self.cache.get(key)) is None:
            rgb = read_rgb(sample.image)
            entry = rgb, self.read_classes(sample, rgb.shape[:2])
            self.cache.put(key, *entry)
        return entry[0].copy(), entry[1].copy()


def check_sizes_agree(sample: Sample, image_hw: tuple[int, int], label_hw: tuple[int, ...]) -> None:
    """Raise DatasetError, naming both files, unless a sample's image and label have one size."""
    if tuple(label_hw) != tuple(image_hw):
        raise DatasetError(
            f"label is {label_hw[1]}x{label_hw[0]} but its image is {image_hw[1]}x{image_hw[0]} (W x H):"
            f" {sample.label} vs {sample.image}"
        )


def _check_size(what: str, size: tuple[int, int] | None) -> None:
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"{what} must be (width, height) with positive entries, got {size}")


def build_dataset(
    name: str,
    root: str | Path,
    split: str,
    *,
    size: tuple[int, int] | None = None,
    num_classes: int = 19,
    train: bool = False,
    city: str | None = None,
    normalization: str = "bgr_mean",
    full_res_label: bool = True,
    random_scale: tuple[float, float] | None = None,
    random_crop: tuple[int, int] | None = None,
    flip: bool = True,
    blur: bool = True,
    labels: bool = True,
    ids: Sequence[int] | None = None,
    strict_labels: bool = True,
    cache_mb: int = 0,
) -> SegmentationDataset:
    """A dataset of `name` (gta5, synthia, cityscapes, crosscity) read from `root`, split `split`.

    size: (W, H) the image is resized to (bicubic); None keeps the file's size.
    num_classes: 19, 16 (SYNTHIA protocol) or 13 (CrossCity protocol); other classes become ignore (255).
    train: augment as the reference does (flip p=0.5 if `flip`, resize, blur p=0.5 if `blur`), optionally
        with `random_scale` (min, max) factors on `size` and a `random_crop` (W, H) that pads with ignore;
        image and label get the same geometry. Otherwise (evaluation) only the image is resized and, with
        `full_res_label`, the label keeps the file's resolution so metrics are computed at full resolution
        (the evaluator upsamples logits to it); `full_res_label=False` resizes the label to `size` (nearest),
        the reference protocol (docs/metrics.md §6.2). Full-resolution labels can be batched only when all
        files have one size (or with batch size 1).
    city: Cityscapes city to keep (None: all); NTHU CrossCity city (required).
    normalization: "bgr_mean" (the DeepLab init) or "imagenet" (torchvision weights); see `normalize`.
    labels: False never opens label files (items carry all-ignore labels): the UDA target-train setting. The
        NTHU CrossCity train split has no labels and always behaves so.
    ids: GTA5/SYNTHIA file numbers replacing the split's list.
    strict_labels: raise on label ids the dataset does not define (False: treat them as ignore).
    cache_mb: keep decoded files in memory, up to this many MiB for the whole process (`decoded_cache`).

    Raises DatasetError naming the path when the root, the split, an image or a label file is missing, and (on
    access) when a file cannot be decoded, sizes disagree or a label holds an unknown id.
    """
    dataset_format = get_format(name)
    check_num_classes(num_classes)
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}"
        )
    _check_size("size", size)
    _check_size("random_crop", random_crop)
    if train and random_scale is not None and (random_crop is None or size is None):
        raise ValueError("random_scale needs size and random_crop, so that every item gets the same size")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root}")
    samples = dataset_format.samples(root, split, city, ids)
    if not labels:
        samples = [Sample(s.name, s.image, None) for s in samples]
    if not samples:
        raise DatasetError(f"no images in split {split!r} of {name} under {root}")
    missing = [
        path for s in samples for path in (s.image, s.label) if path is not None and not path.is_file()
    ]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"missing file: {missing[0]}{more}")
    transform = build_transform(
        size, train=train, random_scale=random_scale, random_crop=random_crop, flip=flip, blur=blur
    )
    return SegmentationDataset(
        samples,
        dataset_format.encoding,
        num_classes,
        transform,
        transform_label=train or not full_res_label,
        normalization=normalization,
        strict_labels=strict_labels,
        cache=decoded_cache(cache_mb),
    )
