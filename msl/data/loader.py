"""Seeded data loaders: one seed gives the same batches, augmentation included, for any number of workers.

The sampler draws, per epoch, an order and one augmentation seed per item from a generator keyed by (seed,
epoch), and the dataset seeds torch's generator with the item's seed around its random transforms. So which
worker loads an item, and how many workers there are, change nothing. Workers also get numpy and `random`
seeded, for any third-party code that draws from them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

_MAX_ITEM_SEED = 2**62


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    (state,) = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state))


class EpochSeededSampler(Sampler[tuple[int, int]]):
    """Yields `(index, item seed)` keys, a fresh order (if `shuffle`) and seeds each epoch.

    Every iteration is one epoch and moves to the next; `set_epoch` jumps, e.g. when resuming a run, and may
    start that epoch part-way through (`start` items in).
    """

    def __init__(self, length: int, *, shuffle: bool, seed: int) -> None:
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.length - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = _epoch_generator(self.seed, self.epoch)
        self.epoch += 1
        order = (
            torch.randperm(self.length, generator=generator) if self.shuffle else torch.arange(self.length)
        )
        item_seeds = torch.randint(_MAX_ITEM_SEED, (self.length,), generator=generator)
        keys = list(zip(order.tolist(), item_seeds.tolist(), strict=True))[self.start :]
        self.start = 0
        return iter(keys)


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in a worker from torch's per-worker seed (base seed + worker id)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int,
    drop_last: bool,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader whose order and augmentation depend only on `seed` and the epoch.

    Each pass over the loader is the next epoch (reshuffled when `shuffle`); `loader.sampler.set_epoch(e)`
    sets it. Workers persist across epochs. pin_memory defaults to whether CUDA is available.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSeededSampler(len(dataset), shuffle=shuffle, seed=seed),
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )


def batch_stream(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    start_batch: int = 0,
    num_workers: int = 0,
    pin_memory: bool | None = None,
) -> Iterator[Any]:
    """Shuffled training batches without end, epoch after epoch, from batch number `start_batch` on.

    The stream depends only on (seed, batch number): starting at batch k yields exactly what an uninterrupted
    stream yields from its k-th batch, which makes resuming a run (and Ray Tune's restore) bit-exact. An
    epoch's incomplete last batch is dropped.
    """
    loader = build_loader(
        dataset,
        batch_size,
        shuffle=True,
        seed=seed,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=pin_memory,
    )
    batches_per_epoch = len(dataset) // batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"{len(dataset)} items are fewer than one batch of {batch_size}")
    epoch, batch_in_epoch = divmod(start_batch, batches_per_epoch)
    loader.sampler.set_epoch(epoch, start=batch_in_epoch * batch_size)
    while True:
        yield from loader
