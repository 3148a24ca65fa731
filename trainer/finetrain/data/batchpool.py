"""Worker batches through shared memory that is allocated once per loader, not once per batch.

torch's default collate puts every worker batch into a fresh shared-memory segment: the worker
faults in and zeroes each page, the main process maps the segment again and unmaps it after the
step. At 16 frames of 224 px the three uint8 image streams are 7.2 MB per clip, about 1,800 fresh
pages per clip, whose system CPU is as much as reading and drawing the clip (BENCHMARKS.md, "Loader,
2026-12-01").

`SharedBatchPool` allocates, in the main process before any worker starts, a ring of batch slots
per worker. A worker copies its batch's image streams into one of its free slots and sends only the
slot's address; the main process wraps the slot in tensors without a copy and frees the slot when
the last tensor that uses it is gone (a numpy view carries the finaliser, and torch keeps that view
alive exactly as long as any tensor on its memory). A worker with no free slot (a caller keeps many
batches) falls back to the default collate, so holding on to batches is always safe.
"""

from __future__ import annotations

import math
import threading
import uuid
import weakref

import torch
from torch.utils.data import default_collate, get_worker_info

_POOLS: dict[str, SharedBatchPool] = {}  # this process's pools, by key (the same key in every worker)


class SharedBatchPool:
    """`slots` batch buffers per worker for the uint8 streams in `shapes` (key -> one item's shape)."""

    FREE, CLAIMED = 0, 1

    def __init__(self, shapes: dict[str, tuple[int, ...]], batch_size: int, workers: int, slots: int):
        self.key = uuid.uuid4().hex
        self.shapes = {k: tuple(int(x) for x in s) for k, s in shapes.items()}
        self.batch_size, self.workers, self.slots = int(batch_size), int(workers), int(slots)
        self._layout()
        total = self.workers * self.slots
        # _new_shared leaves pages untouched: each is faulted in once, by the first batch written there
        self.buffer = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(total * self._slot_bytes))
        self.state = torch.zeros(total, dtype=torch.uint8).share_memory_()
        self._attach()

    def _layout(self) -> None:
        """Byte sizes and each stream's start inside a slot (streams in sorted order), from the shapes."""
        self._item_bytes = {k: math.prod(s) for k, s in self.shapes.items()}
        self._starts, start = {}, 0
        for key in sorted(self.shapes):
            self._starts[key] = start
            start += self.batch_size * self._item_bytes[key]
        self._slot_bytes = start

    def _attach(self) -> None:
        """This process's numpy views of the shared tensors, lock and registry entry."""
        self._bytes = self.buffer.numpy()
        self._flags = self.state.numpy()
        self._lock = threading.Lock()
        self._left: dict[int, int] = {}  # main process: slot -> tensors of it still alive
        _POOLS[self.key] = self

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._layout()
        self._attach()

    # worker side
    def collate(self, items: list[dict]):
        """The default collate, with the pooled streams written into a free slot of this worker."""
        info = get_worker_info()
        keys = [k for k in self.shapes if items and isinstance(items[0], dict) and k in items[0]]
        if info is None or info.id >= self.workers or not self._fits(items, keys):
            return default_collate(items)
        slot = self._claim(info.id)
        if slot is None:
            return default_collate(items)
        out = default_collate([{k: v for k, v in it.items() if k not in keys} for it in items])
        for key in keys:
            torch.stack([it[key] for it in items], out=self._tensor(slot, key, len(items)))
            out[key] = _SlotTensor(self.key, slot, key, len(items), len(keys))
        return out

    def _fits(self, items: list[dict], keys: list[str]) -> bool:
        """Whether the items' pooled streams are uint8 tensors of the slot's shapes and fit one slot."""
        return bool(keys) and len(items) <= self.batch_size and all(
            torch.is_tensor(it.get(k)) and it[k].dtype == torch.uint8 and tuple(it[k].shape) == self.shapes[k]
            for it in items for k in keys)

    def _claim(self, worker: int) -> int | None:
        for slot in range(worker * self.slots, (worker + 1) * self.slots):
            if self._flags[slot] == self.FREE:
                self._flags[slot] = self.CLAIMED
                return slot
        return None

    def _span(self, slot: int, key: str, n: int) -> slice:
        start = slot * self._slot_bytes + self._starts[key]
        return slice(start, start + n * self._item_bytes[key])

    def _tensor(self, slot: int, key: str, n: int) -> torch.Tensor:
        return self.buffer[self._span(slot, key, n)].view(n, *self.shapes[key])

    # main side
    def wrap(self, slot: int, key: str, n: int, keys_in_slot: int) -> torch.Tensor:
        """Slot `slot`'s `key` as a tensor on the shared memory; the slot is freed with its last tensor."""
        with self._lock:
            self._left.setdefault(slot, keys_in_slot)
        view = self._bytes[self._span(slot, key, n)].reshape(n, *self.shapes[key])
        weakref.finalize(view, self._release, slot)
        return torch.from_numpy(view)

    def _release(self, slot: int) -> None:
        with self._lock:
            self._left[slot] -= 1
            if self._left[slot] == 0:
                del self._left[slot]
                self._flags[slot] = self.FREE

    def reclaim(self) -> None:
        """Free every slot the main process does not hold: batches of a loader iterator that stopped
        early were claimed and never arrived. Call only while no worker of this pool runs."""
        with self._lock:
            for slot in range(len(self._flags)):
                if slot not in self._left:
                    self._flags[slot] = self.FREE

    def held(self) -> int:
        with self._lock:
            return len(self._left)


class _SlotTensor:
    """A worker-side reference to one stream of a slot; it unpickles as a tensor in the main process."""

    __slots__ = ("pool", "slot", "key", "n", "keys_in_slot")

    def __init__(self, pool: str, slot: int, key: str, n: int, keys_in_slot: int):
        self.pool, self.slot, self.key, self.n, self.keys_in_slot = pool, slot, key, n, keys_in_slot

    def __reduce__(self):
        return _rebuild, (self.pool, self.slot, self.key, self.n, self.keys_in_slot)


def _rebuild(pool: str, slot: int, key: str, n: int, keys_in_slot: int) -> torch.Tensor:
    return _POOLS[pool].wrap(slot, key, n, keys_in_slot)


class PooledDataLoader(torch.utils.data.DataLoader):
    """A DataLoader whose workers hand over the uint8 image streams through a `SharedBatchPool`.

    `pooled`: the stream keys and one item's shape each. Workers restart every epoch (the Dataset's
    epoch is set in the main process), and the pool outlives them, so pages are faulted in once per
    loader. With no workers it is a plain DataLoader."""

    def __init__(self, dataset, *, batch_sampler, num_workers: int, pooled: dict[str, tuple[int, ...]],
                 prefetch_factor: int = 2, pin_memory: bool = False):
        batch_size = int(getattr(batch_sampler, "batch_size", 0) or 0) if num_workers and pooled else 0
        self.pool = (SharedBatchPool(pooled, batch_size, num_workers, slots=prefetch_factor + 2)
                     if batch_size else None)
        super().__init__(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                         prefetch_factor=prefetch_factor if num_workers else None, persistent_workers=False,
                         collate_fn=self.pool.collate if self.pool else None)

    def __iter__(self):
        if self.pool is not None:
            self.pool.reclaim()
        return super().__iter__()


def image_shapes(dataset) -> dict[str, tuple[int, ...]]:
    """One item's (T,3,S,S) uint8 shape for each image stream a `StoreDataset` delivers."""
    from .transforms import VISUAL_STREAMS

    side = dataset.image_size
    return {k: (dataset.frames, 3, side, side) for k in VISUAL_STREAMS if k in dataset.streams}
