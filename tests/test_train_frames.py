"""Temporal augmentation: from a store that holds more frames per clip than the model reads, training
draws one frame per segment at random, a new draw each epoch and clip; validation and test read the
segment centres. Frames are tagged through blendshape 0 (`_neutral`, which a flip leaves in place),
which holds each stored frame's position."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import zarr
from toy_store import write_toy_store

from fineprep.extract.sampling import segment_centres
from fineschema import layout, write_parquet_atomic
from finetrain.config import DataConfig
from finetrain.data.store import StoreDataset, StoreFramesWarning, StoreInfo, frame_positions

STORED, WANTED = 48, 16
TAG = ("blendshapes",)


def _tagged_store(root, frames: int):
    root = write_toy_store(root, clips_per_class=1, frames=frames, size=16)
    group = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="r+")
    shapes = group["blendshapes"][:]
    shapes[..., 0] = np.arange(frames, dtype=np.float32)
    group["blendshapes"][:] = shapes
    return root


@pytest.fixture(scope="module")
def store48(tmp_path_factory):
    return _tagged_store(tmp_path_factory.mktemp("frames") / "store", STORED)


def _dataset(root, train: bool, seed: int = 0, frames: int = WANTED, streams=TAG) -> StoreDataset:
    info = StoreInfo.open(root)
    return StoreDataset(info, range(len(info)), image_size=16, frames=frames, train=train,
                        data_cfg=DataConfig(frames=frames), streams=streams, seed=seed)


def _picked(ds: StoreDataset, i: int) -> np.ndarray:
    return ds[i]["blendshapes"][:, 0].round().long().numpy()


def test_training_draws_one_frame_per_segment_new_each_epoch_and_clip(store48):
    ds = _dataset(store48, train=True)
    draws = {}
    for epoch in range(5):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            pick = _picked(ds, i)
            assert len(pick) == WANTED
            assert (pick // (STORED // WANTED) == np.arange(WANTED)).all(), pick  # one per segment, in order
            draws[epoch, i] = tuple(pick)
    clips = len(ds)
    for i in range(clips):
        assert len({draws[e, i] for e in range(5)}) == 5  # a new draw every epoch
    for e in range(5):
        assert len({draws[e, i] for i in range(clips)}) == clips  # and for every clip
    offsets = np.bincount(np.array(list(draws.values())).ravel() % 3, minlength=3)
    n = 5 * clips * WANTED
    assert (abs(offsets - n / 3) < 5 * np.sqrt(n * 2 / 9)).all(), offsets  # each place in a segment, evenly


def test_validation_and_test_read_the_segment_centres(store48):
    ds = _dataset(store48, train=False)
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            assert _picked(ds, i).tolist() == [3 * k + 1 for k in range(WANTED)]


def test_the_draw_is_a_function_of_seed_epoch_and_clip(store48):
    """A fresh Dataset at epoch 3 (a resumed run) reads what one that went through epochs 0-2 reads,
    whole items included (crop, flip, jitter); another seed draws other frames."""
    streams = ("frames", "parsing", "landmarks", "blendshapes")
    walked = _dataset(store48, train=True, streams=streams)
    for epoch in range(3):
        walked.set_epoch(epoch)
        [walked[i] for i in range(len(walked))]
    walked.set_epoch(3)
    resumed = _dataset(store48, train=True, streams=streams)
    resumed.set_epoch(3)
    other = _dataset(store48, train=True, seed=1, streams=streams)
    other.set_epoch(3)
    for i in reversed(range(len(walked))):
        a, b = walked[i], resumed[i]
        assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
        assert not torch.equal(a["blendshapes"], other[i]["blendshapes"])


def test_a_store_of_as_many_frames_as_wanted_gives_all_of_them(tmp_path):
    ds = _dataset(_tagged_store(tmp_path / "store", WANTED), train=True)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            assert _picked(ds, i).tolist() == list(range(WANTED))
    assert frame_positions(WANTED, WANTED, np.random.default_rng(0)).tolist() == list(range(WANTED))


def test_fewer_stored_frames_than_wanted_uses_them_all_and_warns_once(tmp_path):
    info = StoreInfo.open(_tagged_store(tmp_path / "store", 4))
    with pytest.warns(StoreFramesWarning, match=r"holds 4 frames per clip, fewer than data.frames=16: clips "
                                                r"use all 4 \(extract with --frames 48"):
        ds = StoreDataset(info, range(len(info)), image_size=16, frames=16, train=True, streams=TAG)
    assert ds.frames == 4 and _picked(ds, 0).tolist() == [0, 1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StoreDataset(info, range(len(info)), image_size=16, frames=16, train=False, streams=TAG)


@pytest.mark.parametrize("source", [*range(1, 60), 70, 97, 144, 847])
def test_read_frames_are_the_public_loaders_frames_of_the_source(source):
    """A clip of `source` frames stored as 48 by extract (segment centres, a short clip edge-padded):
    the centres read are the frames a 16-frame extract stores, and every training draw lies in its
    segment of the source clip."""
    stored = np.array(segment_centres(source, STORED))
    distinct = np.flatnonzero(np.r_[True, stored[1:] != stored[:-1]])
    assert stored[frame_positions(STORED, WANTED, None, distinct)].tolist() == segment_centres(source, WANTED)
    rng = np.random.default_rng(source)
    for _ in range(20):
        drawn = stored[frame_positions(STORED, WANTED, rng, distinct)]
        assert (np.diff(drawn) >= 0).all()
        if source >= WANTED:
            k = np.arange(WANTED)
            assert ((k * source // WANTED <= drawn) & (drawn < -(-(k + 1) * source // WANTED))).all(), drawn


def test_the_dataset_reads_the_distinct_frames_the_manifest_names(tmp_path):
    """A clip whose manifest says extract padded it (a 28-frame source: 28 frames, then the last one 20
    times more) is sampled over its 28 distinct frames, not over the padding."""
    root = _tagged_store(tmp_path / "store", STORED)
    path = root / layout.MANIFEST_FILE
    table = pq.read_table(path)
    column = table["frame_indices"].to_pylist()
    column[0] = list(range(28)) + [27] * 20
    i = table.schema.get_field_index("frame_indices")
    write_parquet_atomic(table.set_column(i, table.schema.field(i), pa.array(column, pa.list_(pa.int32()))), path)
    assert _picked(_dataset(root, train=False), 0).tolist() == segment_centres(28, WANTED)
    train = _dataset(root, train=True)
    picks = set()
    for epoch in range(4):
        train.set_epoch(epoch)
        pick = _picked(train, 0)
        assert pick.max() <= 27 and (np.diff(pick) >= 0).all(), pick
        picks.add(tuple(pick))
    assert len(picks) == 4


@pytest.mark.slow
def test_runs_read_data_frames_of_a_longer_store_and_all_of_a_shorter_one(tmp_path):
    """Through the training recipe: a 12-frame store read 4 per clip, and a 2-frame store asked for 4
    (the model is built for the 2 it holds, with one warning)."""
    from finetrain.config import load_config
    from finetrain.train.recipe import train

    common = ["optim.epochs=1", "optim.batch_size=4", "run.threads=1", "data.frames=4",
              "model.streams=[frames, blendshapes]"]
    longer = write_toy_store(tmp_path / "long", clips_per_class=2, frames=12, size=16)
    summary = train(load_config("tiny", common), longer, tmp_path / "run-long", progress=False)
    assert summary["test"]["count"] == 7
    shorter = write_toy_store(tmp_path / "short", clips_per_class=2, frames=2, size=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(load_config("tiny", common), shorter, tmp_path / "run-short", progress=False)
    assert summary["test"]["count"] == 7
    frames_warnings = [w for w in caught if issubclass(w.category, StoreFramesWarning)]
    assert len(frames_warnings) == 1 and "holds 2 frames per clip" in str(frames_warnings[0].message)
