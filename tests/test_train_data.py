"""The trainer's fast data path gives exactly what the plain one gives: whole-chunk reads against
zarr's own reads, rendering against plain drawing, and Dataset items against a plain pipeline
(zarr reads, torch crop/resize/flip, blend, one dot at a time)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from toy_store import write_toy_store
from zarr.codecs import BloscCodec, BloscShuffle, ShardingCodec

from fineschema import layout
from finetrain.config import DataConfig
from finetrain.data.chunks import ChunkReader
from finetrain.data.render import PALETTE, YELLOW, landmark_dots, parsing_overlay
from finetrain.data.store import StoreDataset, StoreInfo, frame_positions, mirrored_blendshapes

torch.set_num_threads(1)


def _plain_overlay(frames, parsing, alpha):
    a = int(round(alpha * 256))
    cls = parsing.long().clamp(0, len(PALETTE) - 1)
    colour = PALETTE[cls].permute(0, 3, 1, 2).int()
    mixed = (frames.int() * (256 - a) + colour * a) >> 8
    return torch.where((cls > 0).unsqueeze(1), mixed, frames.int()).to(torch.uint8)


def _plain_dots(frames, points, valid, radius):
    out = frames.clone()
    t, _, h, w = frames.shape
    for f in range(t):
        if valid is not None and not valid[f]:
            continue
        for px, py in points[f].tolist():
            x, y = int(np.floor(np.float32(px) * w)), int(np.floor(np.float32(py) * h))
            if 0 <= x < w and 0 <= y < h:
                out[f, :, max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1] = \
                    torch.tensor(YELLOW, dtype=torch.uint8).view(3, 1, 1)
    return out


def test_chunk_reader_matches_zarr(tmp_path):
    """Same values, dtype and shape as `array[i]`: zarr's default codec, Blosc with and without
    shuffle, unwritten chunks (fill values); arrays it cannot read by chunk fall back to zarr."""
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="w", zarr_format=3)
    rng = np.random.default_rng(0)
    data = {
        "u8": rng.integers(0, 255, (5, 3, 8, 8, 3)).astype(np.uint8),
        "f32": rng.standard_normal((5, 3, 7, 2)).astype(np.float32),
        "flag": rng.random((5, 3)) > 0.5,
    }
    specs = {
        "u8": dict(compressors=BloscCodec(cname="lz4", clevel=9, shuffle=BloscShuffle.noshuffle)),
        "f32": dict(compressors=BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle), fill_value=7.0),
        "flag": dict(),
    }
    arrays = {}
    for name, values in data.items():
        arr = group.create_array(name, shape=values.shape, chunks=(1, *values.shape[1:]), dtype=values.dtype,
                                 **specs[name])
        for i in (0, 1, 3, 4):  # clip 2 stays unwritten
            arr[i] = values[i]
        arrays[name] = arr
    sharded = group.create_array("sharded", shape=(4, 6), chunks=(1, 6), shards=(2, 6), dtype="int16")
    sharded[:] = np.arange(24, dtype=np.int16).reshape(4, 6)
    pairs = group.create_array("pairs", shape=(4, 6), chunks=(2, 6), dtype="int16")
    pairs[:] = np.arange(24, dtype=np.int16).reshape(4, 6)
    assert any(isinstance(c, ShardingCodec) for c in sharded.metadata.codecs)
    reopened = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    for name in (*data, "sharded", "pairs"):
        reader = ChunkReader(reopened[name])
        assert reader.fast == (name in data), name
        for i in range(reopened[name].shape[0]):
            want, got = np.asarray(reopened[name][i]), reader.read(i)
            assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), (name, i)
    assert np.all(ChunkReader(reopened["f32"]).read(2) == 7.0)


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_rendering_matches_plain_drawing(alpha):
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (3, 3, 20, 24), dtype=torch.uint8, generator=g)
    parsing = torch.randint(0, 9, (3, 20, 24), dtype=torch.uint8, generator=g)  # 7, 8: past the palette
    assert torch.equal(parsing_overlay(frames, parsing, alpha), _plain_overlay(frames, parsing, alpha))
    assert torch.equal(parsing_overlay(frames, parsing.long(), alpha), _plain_overlay(frames, parsing, alpha))
    points = torch.rand((3, 40, 2), generator=g) * 1.2 - 0.1  # some outside the image
    points[0, :4] = torch.tensor([[0.0, 0.0], [0.999, 0.999], [0.0, 0.999], [0.5, 0.0]])  # at the borders
    valid = torch.tensor([True, False, True])
    for radius in (0, 1, 2):
        assert torch.equal(landmark_dots(frames, points, valid, radius), _plain_dots(frames, points, valid, radius))
    assert torch.equal(landmark_dots(frames, points, None, 1), _plain_dots(frames, points, None, 1))


def _plain_item(ds: StoreDataset, i: int) -> tuple[dict, tuple]:
    """An item the plain way (zarr reads, torch crop/resize/flip, blend, one dot at a time), and its crop."""
    group = zarr.open_group(str(ds.info.root / layout.ARRAYS_DIR), mode="r")
    row = int(ds.rows[i])
    si = int(ds.info.store_index[row])
    rng = np.random.default_rng([ds.seed, ds.epoch, row]) if ds.train else None
    pick = frame_positions(ds.info.frames, ds.frames, rng)
    frames = torch.from_numpy(group["frames"][si][pick])
    s, size = frames.shape[1], ds.image_size
    x0, y0, side, flip = ds._crop(s, rng)
    frames = frames[:, y0:y0 + side, x0:x0 + side].permute(0, 3, 1, 2)
    parsing = torch.from_numpy(group["parsing"][si][pick])[:, y0:y0 + side, x0:x0 + side]
    if side != size:
        frames = F.interpolate(frames.contiguous(memory_format=torch.channels_last), size=(size, size),
                               mode="bilinear", align_corners=False, antialias=side > size)
        parsing = F.interpolate(parsing.unsqueeze(1), size=(size, size), mode="nearest").squeeze(1)
    frames = frames.contiguous()
    if flip:
        frames, parsing = frames.flip(-1), parsing.flip(-1)
    pts = (torch.from_numpy(group["landmarks"][si][pick][..., :2]) * s - torch.tensor([x0, y0])) / side
    if flip:
        pts[..., 0] = 1.0 - pts[..., 0]
    valid = torch.from_numpy(group["face_found"][si][pick])
    parsing[~valid] = 0  # no overlay on frames where the landmarker found no face
    factors = rng.uniform(1 - ds.cfg.jitter, 1 + ds.cfg.jitter, size=3) if ds.train else np.ones(3)
    return {"label": int(ds.info.label_index[row]), "row": row, "frames": frames,
            "parsing": _plain_overlay(frames, parsing, ds.cfg.overlay_alpha),
            "landmarks": _plain_dots(frames, pts, valid, ds.cfg.landmark_radius),
            "jitter": torch.tensor(factors, dtype=torch.float32),
            "blendshapes": torch.from_numpy(group["blendshapes"][si][pick][..., mirrored_blendshapes() if flip
                                                                            else slice(None)]),
            "blendshapes_mask": valid}, (x0, y0, side, flip)


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory):
    """A toy store with points off the image, frames without a face and classes past the palette."""
    root = write_toy_store(tmp_path_factory.mktemp("toy") / "store", clips_per_class=1, frames=5, size=40)
    group = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="r+")
    lms = group["landmarks"][:]
    lms[:, :, :30, :2] = lms[:, :, :30, :2] * 1.4 - 0.2
    group["landmarks"][:] = lms
    found = group["face_found"][:]
    found[:, 2] = False
    group["face_found"][:] = found
    parsing = group["parsing"][:]
    parsing[:, :, :3, :3] = 9
    group["parsing"][:] = parsing
    return root


@pytest.mark.parametrize("frames,image_size,radius,train", [(5, 48, 1, True), (3, 32, 2, True), (5, 40, 0, False)])
def test_dataset_items_match_plain_pipeline(odd_store, frames, image_size, radius, train):
    """Upscaled, downscaled (antialiased) and uncropped clips, all or some of the stored frames."""
    info = StoreInfo.open(odd_store)
    cfg = DataConfig(frames=frames, landmark_radius=radius, crop_scale=[0.5, 1.0])
    ds = StoreDataset(info, range(len(info)), image_size=image_size, frames=frames, train=train, data_cfg=cfg)
    flips = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            got, (want, crop) = ds[i], _plain_item(ds, i)
            flips.add(crop[3])
            assert list(got) == list(want)
            for key, value in want.items():
                if torch.is_tensor(value):
                    assert got[key].dtype == value.dtype and torch.equal(got[key], value), (key, epoch, i)
                else:
                    assert got[key] == value
    assert flips == ({True, False} if train else {False})


def test_a_label_outside_the_store_label_set_is_refused_in_one_line(tmp_path):
    """A manifest label that is not in the store's label set stops the run as a store error naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fineschema import StoreError, write_parquet_atomic

    root = write_toy_store(tmp_path / "s", clips_per_class=2)
    path = root / layout.MANIFEST_FILE
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    labels[0] = "sleepy"
    table = table.set_column(table.schema.get_field_index("label"), "label",
                             pa.array(labels, type=table.schema.field("label").type))
    write_parquet_atomic(table, path)
    with pytest.raises(StoreError) as err:
        StoreInfo.open(root)
    message = str(err.value)
    assert "\n" not in message and "'sleepy'" in message and str(root) in message and "dfew" in message
