"""A training sample stream that is reproducible and resumable at any step.

Every training sample has a global number k = 0, 1, 2, ... (across epochs and DDP ranks). Which image it
crops and every random choice inside it (crop position, flips, rotation) are derived from (seed, k) alone,
not from a global RNG, so:
  * a run resumed at step N sees exactly the samples a straight run sees after step N
    (the sampler starts at k = N * batch_size * world_size);
  * the number of DataLoader workers and their prefetching change nothing;
  * DDP ranks take interleaved k's, so a step's global batch is the same set of samples as a
    single-process run with the same global batch.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler


def sample_seed(seed: int, k: int) -> int:
    """A well-mixed 32-bit seed for sample k (adjacent k's get unrelated streams)."""
    digest = hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**32


class StreamDataset(Dataset):
    """Maps a global sample number k to (image index, per-sample seed) of a reseedable patch dataset.

    The image order is a fresh permutation for every pass over the data (pass = k // len(base)).
    `base` must offer `reseed(seed)` (fixing its crop/augmentation randomness) and `__getitem__(index)`.
    """

    def __init__(self, base: Dataset, seed: int, shuffle: bool = True):
        self.base, self.seed, self.shuffle = base, int(seed), shuffle
        self.n = len(base)  # type: ignore[arg-type]
        self._perms: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.n

    def _index(self, k: int) -> int:
        if not self.shuffle:
            return k % self.n
        epoch = k // self.n
        perm = self._perms.get(epoch)
        if perm is None:
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(sample_seed(self.seed, -1 - epoch)))
            self._perms = {epoch: perm}  # keep one: passes are consumed in order
        return int(perm[k % self.n])

    def __getitem__(self, k: int):
        self.base.reseed(sample_seed(self.seed, k))  # type: ignore[attr-defined]
        return self.base[self._index(k)]


class StreamSampler(DistributedSampler):
    """Yields global sample numbers for one rank: one Lightning epoch = `batches_per_epoch` batches.

    Call `start_at(global_step)` before iterating after a resume; consecutive iterations continue the stream.
    It is a DistributedSampler (without its constructor) so that Lightning's DDP set-up keeps it as it is
    instead of wrapping it in another sampler that would reshard the stream.
    """

    def __init__(self, dataset_len: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 batches_per_epoch: int | None = None):
        self.num_replicas, self.epoch, self.shuffle = int(world_size), 0, False
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        per_step = self.batch_size * self.world_size
        self.batches_per_epoch = int(batches_per_epoch or max(dataset_len // per_step, 1))
        self._next_step = 0

    def set_epoch(self, epoch: int) -> None:  # the stream position, not the epoch, decides the samples
        self.epoch = epoch

    def start_at(self, step: int) -> None:
        self._next_step = int(step)

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[int]:
        first, self._next_step = self._next_step, self._next_step + self.batches_per_epoch
        per_step = self.batch_size * self.world_size
        for step in range(first, first + self.batches_per_epoch):
            base = step * per_step + self.rank * self.batch_size
            yield from range(base, base + self.batch_size)
