"""The in-memory cache of decoded images, under one byte budget shared by all splits.

Each file is decoded once per run (DIV2K PNGs cost ~60 ms each to decode; a training step must never wait for
that). Images beyond the budget are decoded on each access.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sr_lightning.data.pair_loader import PairLoader
from sr_lightning.data.records import ImageRecord

log = logging.getLogger(__name__)


class CacheBudget:
    """A byte budget shared by the caches of all splits (train fills first)."""

    def __init__(self, limit_mb: float | None):
        self.limit = None if limit_mb is None else int(float(limit_mb) * 2**20)
        self.used = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # workers started with spawn pickle the datasets; a Lock cannot be
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        with self._lock:
            if self.limit is not None and self.used + nbytes > self.limit:
                return False
            self.used += nbytes
            return True


class ImageCache:
    """Decoded (HR, LR) uint8 arrays per record, kept in memory up to a byte budget.

    `preload()` decodes in the main process before the DataLoader starts its workers; forked workers then
    share the arrays copy-on-write instead of each decoding every file again. Records beyond the budget are
    decoded on each access (use `prepare` to cut large sets into sub-images in that case).
    """

    def __init__(self, records: Sequence[ImageRecord], loader: PairLoader, budget: CacheBudget | None = None):
        self.records = list(records)
        self.loader = loader
        self.budget = budget or CacheBudget(None)
        self._store: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def cached(self) -> int:
        return len(self._store)

    @property
    def nbytes(self) -> int:
        return sum(hr.nbytes + (lr.nbytes if lr is not None else 0) for hr, lr in self._store.values())

    def preload(self, threads: int | None = None, progress: bool = True) -> None:
        if self.budget.limit == 0:
            return
        threads = threads or max(1, min(4, os.cpu_count() or 1))
        pending = [i for i in range(len(self.records)) if i not in self._store]
        bar = None
        if progress and len(pending) > 50:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), desc="decoding images into memory", unit="img", leave=False)

        def work(i: int):
            return i, self.loader.load(self.records[i], full_lr=True)

        try:
            # Decode in order and stop once the budget is spent: the first records stay cached, the rest lazy.
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for start in range(0, len(pending), threads * 4):
                    chunk = pending[start: start + threads * 4]
                    for i, (hr, lr) in pool.map(work, chunk):
                        nbytes = hr.nbytes + (lr.nbytes if lr is not None else 0)
                        if not self.budget.take(nbytes):
                            if bar is not None:
                                bar.close()
                            log.info("image cache budget reached after %d of %d images", self.cached, len(self))
                            return
                        self._store[i] = (hr, lr)
                        if bar is not None:
                            bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    def is_cached(self, index: int) -> bool:
        return index in self._store

    def get(self, index: int, full_lr: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        hit = self._store.get(index)
        if hit is not None:
            return hit
        return self.loader.load(self.records[index], full_lr=full_lr)

