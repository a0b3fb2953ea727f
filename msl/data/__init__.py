"""Datasets in their on-disk formats (GTA5, SYNTHIA, Cityscapes, NTHU CrossCity), loaders and verification.

    dataset = build_dataset("gta5", root, "train", size=(1280, 720), train=True)
    loader = build_loader(dataset, 1, shuffle=True, seed=0, num_workers=4, drop_last=True)
    batches = batch_stream(dataset, 2, seed=0, start_batch=100)  # endless, resumable training batches
    image, label, name = dataset[0]  # (3, H, W) float32, (H, W) int64 in 0..C-1 or 255, str

Names load lazily (PEP 562) so that `msl.data.synth`, which needs no torch, does not import it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetError": "msl.data.files",
    "DATASET_NAMES": "msl.data.formats",
    "SegmentationDataset": "msl.data.dataset",
    "build_dataset": "msl.data.dataset",
    "EpochSeededSampler": "msl.data.loader",
    "build_loader": "msl.data.loader",
    "batch_stream": "msl.data.loader",
    "NORMALIZATIONS": "msl.data.transforms",
    "normalize": "msl.data.transforms",
    "denormalize": "msl.data.transforms",
    "SplitReport": "msl.data.verify",
    "VerifyReport": "msl.data.verify",
    "verify_dataset": "msl.data.verify",
    "main_verify": "msl.data.verify",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
