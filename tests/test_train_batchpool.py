"""Worker batches through the shared-memory pool: the same batches as torch's default collate, slots
freed with their last tensor and reused, and a caller that keeps every batch still gets the right data."""

from __future__ import annotations

import gc

import pytest
import torch
from toy_store import write_toy_store

from finetrain.data.batchpool import PooledDataLoader, SharedBatchPool, image_shapes
from finetrain.data.store import ShardedBatchSampler, StoreDataset, StoreInfo

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = write_toy_store(tmp_path_factory.mktemp("pool") / "store", clips_per_class=3, frames=4, size=32)
    return StoreDataset(StoreInfo.open(root), range(21), image_size=24, frames=4, train=True,
                        streams=("frames", "parsing", "landmarks", "blendshapes"))


def _plain(dataset, sampler):
    return list(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0))


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.slow
def test_pooled_batches_equal_default_collate(dataset):
    sampler = ShardedBatchSampler(len(dataset), 4, seed=3, shuffle=True, drop_last=False)
    loader = PooledDataLoader(dataset, batch_sampler=sampler, num_workers=2, pooled=image_shapes(dataset))
    assert set(loader.pool.shapes) == {"frames", "parsing", "landmarks"}
    for epoch in (0, 1):  # workers restart each epoch; the pool and its slots stay
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        expected = _plain(dataset, sampler)
        got = 0
        for batch, want in zip(loader, expected, strict=True):
            _same(batch, want)
            got += 1
            assert batch["frames"].shape == (len(batch["label"]), 4, 3, 24, 24)
        assert got == len(sampler) == 6  # 21 clips in batches of 4, the last one of 1
        del batch
        gc.collect()
        assert loader.pool.held() == 0  # every slot came back with its last tensor


def test_slot_is_reused_only_after_its_tensors_are_gone(dataset):
    pool = SharedBatchPool({"frames": (4, 3, 24, 24)}, batch_size=2, workers=1, slots=2)
    items = [dataset[i] for i in range(2)]
    slot = pool._claim(0)
    torch.stack([it["frames"] for it in items], out=pool._tensor(slot, "frames", 2))
    frames = pool.wrap(slot, "frames", 2, keys_in_slot=1)
    view = frames[1, 0]  # a view keeps the slot too
    del frames
    gc.collect()
    assert pool.held() == 1 and pool._flags[slot] == pool.CLAIMED
    assert torch.equal(view, items[1]["frames"][0])
    del view
    gc.collect()
    assert pool.held() == 0 and pool._flags[slot] == pool.FREE
    assert pool._claim(0) == slot


@pytest.mark.slow
def test_kept_batches_stay_intact(dataset):
    """A caller that keeps all batches exhausts the slots; the workers fall back to fresh memory."""
    sampler = ShardedBatchSampler(len(dataset), 2, seed=1, shuffle=True, drop_last=True)
    loader = PooledDataLoader(dataset, batch_sampler=sampler, num_workers=1, pooled=image_shapes(dataset))
    kept = list(loader)
    assert len(kept) == 10 > loader.pool.slots
    assert loader.pool.held() == loader.pool.slots  # every slot in use, the rest came through torch
    for batch, want in zip(kept, _plain(dataset, sampler), strict=True):
        _same(batch, want)
    del kept, batch
    gc.collect()
    assert loader.pool.held() == 0


def test_no_workers_is_a_plain_loader(dataset):
    sampler = ShardedBatchSampler(len(dataset), 4, seed=0, shuffle=False, drop_last=False)
    loader = PooledDataLoader(dataset, batch_sampler=sampler, num_workers=0, pooled=image_shapes(dataset))
    assert loader.pool is None
    for batch, want in zip(loader, _plain(dataset, sampler), strict=True):
        _same(batch, want)
