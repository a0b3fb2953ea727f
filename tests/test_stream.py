"""The resumable batch stream: same seed, same batches, whatever the start point or the number of workers."""

import itertools

import torch
from torch.utils.data import Dataset

from msl.data import batch_stream


class NoisyItems(Dataset):
    """Item i is (i, a random draw): the draw stands for a random augmentation. Keys are (index, item seed),
    and the draw uses the item seed as SegmentationDataset's transforms do."""

    def __len__(self):
        return 10

    def __getitem__(self, key):
        index, seed = key
        return torch.tensor(index), torch.rand((), generator=torch.Generator().manual_seed(seed))


def take(stream, n):
    return [tuple(t.tolist() for t in batch) for batch in itertools.islice(stream, n)]


def test_epochs_are_permutations_and_drop_the_incomplete_batch():
    batches = take(batch_stream(NoisyItems(), 3, seed=0), 6)  # 3 batches per epoch of 10 items
    first_epoch = sorted(i for indices, _ in batches[:3] for i in indices)
    assert len(first_epoch) == 9 and len(set(first_epoch)) == 9
    assert [b[0] for b in batches[:3]] != [b[0] for b in batches[3:]]  # a new order each epoch


def test_starting_later_gives_the_same_batches_as_running_through():
    through = take(batch_stream(NoisyItems(), 3, seed=5), 8)
    for start in (1, 3, 4, 7):
        assert take(batch_stream(NoisyItems(), 3, seed=5, start_batch=start), 8 - start) == through[start:]


def test_stream_does_not_depend_on_workers_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next_draw = torch.rand(()).item()
    torch.manual_seed(123)
    in_process = take(batch_stream(NoisyItems(), 2, seed=1), 7)
    assert torch.rand(()).item() == expected_next_draw
    assert take(batch_stream(NoisyItems(), 2, seed=1, num_workers=2), 7) == in_process
    assert take(batch_stream(NoisyItems(), 2, seed=2), 7) != in_process
