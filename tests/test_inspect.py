"""`fineprep show / stats / export` on tiny stores written here with zarr and pyarrow per the contract."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from PIL import Image
from typer.testing import CliRunner

from fineprep.cli import app
from fineprep.inspect import InspectError, open_store
from fineprep.inspect.export import export_dfer_clip, file_names
from fineprep.inspect.show import PALETTE, overlay, pick_frames
from fineprep.inspect.stats import compute_stats
from fineprep.inspect.store import description_text
from fineschema import SCHEMA_VERSION, layout, tables

T, S = 4, 32
runner = CliRunner()


def _clip_arrays(seed: int):
    """A bright disc (the 'face') on grey, its parsing map (skin, lips) and landmarks on the disc."""
    yy, xx = np.mgrid[:S, :S]
    disc = (yy - S / 2) ** 2 + (xx - S / 2) ** 2 < (S / 3) ** 2
    lips = disc & (yy > S * 0.6)
    frame = np.full((S, S, 3), 90, np.uint8)
    frame[disc] = (200, 170, 150)
    frames = np.stack([np.roll(frame, t + seed, axis=1) for t in range(T)])
    parsing = np.zeros((T, S, S), np.uint8)
    parsing[:, disc] = 1
    parsing[:, lips] = 5
    rng = np.random.default_rng(seed)
    landmarks = (0.5 + 0.2 * (rng.random((T, layout.NUM_LANDMARKS, 3)) - 0.5)).astype(np.float32)
    return frames, parsing, landmarks


def make_store(root: Path, dataset: str = "dfew", label_set: str = "dfew") -> Path:
    """Four clips: three ok (clip 00003 has one frame without a face), one missing."""
    rows = [
        dict(clip_id="00001", label="happiness", train_folds=[2], test_folds=[1], caption_en="A woman smiles.",
             store_index=0, status="ok", source_path="Clip/clip_224x224/00001", num_source_frames=70),
        dict(clip_id="00002", label="anger", train_folds=[1], test_folds=[2], store_index=1, status="ok",
             source_path="Clip/clip_224x224/00002", num_source_frames=33),
        dict(clip_id="00003", label="anger", train_folds=[1], test_folds=[2], store_index=2, status="ok",
             source_path="Clip/clip_224x224/00003", num_source_frames=None),
        dict(clip_id="00004", label="fear", train_folds=[1, 2], test_folds=[], store_index=-1, status="missing",
             error="listed in the splits but absent", source_path="Clip/clip_224x224/00004"),
    ]
    for r in rows:  # from_pylist takes its columns from the first row: give every row every key
        r["dataset"] = dataset
        r.setdefault("error", None)
        r.setdefault("caption_en", None)
        r["frame_indices"] = [0, 10, 20, 30] if r["status"] == "ok" else None
    root.mkdir(parents=True)
    pq.write_table(tables.conform(pa.Table.from_pylist(rows), tables.MANIFEST), root / layout.MANIFEST_FILE)
    group = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="w", zarr_format=3)
    arrays = {spec.name: group.create_array(spec.name, shape=spec.concrete_shape(3, T, S),
                                            chunks=spec.chunk_shape(T, S), dtype=spec.dtype)
              for spec in layout.ARRAYS}
    for i in range(3):
        frames, parsing, landmarks = _clip_arrays(i)
        arrays["frames"][i] = frames
        arrays["parsing"][i] = parsing
        arrays["landmarks"][i] = landmarks
        arrays["face_found"][i] = np.array([True, True, i != 2, True])
        arrays["blendshapes"][i] = np.full((T, layout.NUM_BLENDSHAPES), 0.1, np.float32)
        arrays["boxes"][i] = np.tile(np.array([0, 0, S, S], np.float32), (T, 1))
        arrays["shot"].with_config({"write_empty_chunks": True})[i] = np.zeros(T, np.int16)
        arrays["track_score"][i] = np.full(T, 0.5, np.float32)
        arrays["landmark_score"][i] = np.full(T, 0.9, np.float32)
    group.attrs.update({
        "schema_version": SCHEMA_VERSION, "dataset": dataset, "frames": T, "size": S,
        "parsing_classes": list(layout.PARSING_CLASSES), "landmark_model_sha256": "0" * 64,
        "label_set": label_set, "source": "clip_224x224",
    })
    now = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    desc = [dict(clip_id="00001", model="m", engine="hf", prompt_id="p", prompt_hash="h", refined_text=text,
                 random_weights=False, status="ok", created_at=now + dt.timedelta(minutes=m))
            for m, text in ((0, "older text"), (5, "The mouth corners rise."))]
    (root / layout.DESCRIPTIONS_DIR).mkdir()
    pq.write_table(tables.conform(pa.Table.from_pylist(desc), tables.DESCRIPTION),
                   root / layout.DESCRIPTIONS_DIR / "part-00000.parquet")
    return root


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "store")


# ------------------------------------------------------------------------------------------------ show
def test_overlay_and_frame_picking():
    frame = np.full((2, 2, 3), 100, np.uint8)
    parsing = np.array([[0, 5], [1, 0]], np.uint8)
    out = overlay(frame, parsing, alpha=0.5)
    assert (out[0, 0] == 100).all() and (out[1, 1] == 100).all(), "background is left clear"
    assert tuple(out[0, 1]) == tuple(round(0.5 * 100 + 0.5 * c) for c in PALETTE[5])
    assert pick_frames(16, 4) == [0, 5, 10, 15] and pick_frames(4, None) == [0, 1, 2, 3]
    assert pick_frames(4, 10) == [0, 1, 2, 3] and pick_frames(9, 1) == [4]


def test_show_writes_sheet_with_landmarks_and_overlay(store, tmp_path):
    out = tmp_path / "sheet.png"
    result = runner.invoke(app, ["show", "--store", str(store), "--clip", "00001", "--out", str(out)])
    assert result.exit_code == 0, result.output
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[1] == T * 200  # four 2-inch panels at 100 dpi
    green = (img[..., 1] > 180) & (img[..., 0] < 120) & (img[..., 2] < 160)
    assert green.sum() > 50, "landmark dots are drawn"
    lips = overlay(np.full((1, 1, 3), (200, 170, 150), np.uint8), np.array([[5]], np.uint8))[0, 0]
    assert (np.abs(img - lips).sum(-1) < 12).sum() > 100, "lips class blended over the face"
    view = open_store(store)
    assert description_text(view.latest_descriptions()["00001"]).startswith("The mouth corners rise.")


def test_show_refuses_unknown_and_missing_clips(store, tmp_path):
    out = tmp_path / "x.png"
    r = runner.invoke(app, ["show", "--store", str(store), "--clip", "99999", "--out", str(out)])
    assert r.exit_code == 2 and "not in the store" in r.output and not out.exists()
    r = runner.invoke(app, ["show", "--store", str(store), "--clip", "00004", "--out", str(out)])
    assert r.exit_code == 2 and "status 'missing'" in r.output
    with pytest.raises(InspectError, match="absent"):
        open_store(store).ok_row("00004")
    r = runner.invoke(app, ["show", "--store", str(tmp_path / "none"), "--clip", "1", "--out", str(out)])
    assert r.exit_code == 2 and "no store here" in r.output


# ----------------------------------------------------------------------------------------------- stats
def test_stats_numbers(store):
    s = compute_stats(open_store(store))
    assert (s["clips"], s["ok"], s["status"]) == (4, 3, {"missing": 1, "ok": 3})
    assert s["classes"]["anger"] == {"listed": 2, "ok": 2} and s["classes"]["fear"] == {"listed": 1, "ok": 0}
    assert s["folds"]["1"] == {"train": 3, "test": 1, "train_ok": 2, "test_ok": 1}
    assert s["folds"]["2"] == {"train": 2, "test": 2, "train_ok": 1, "test_ok": 2}
    assert s["face_found_ratio"] == pytest.approx(11 / 12) and s["frames_stored"] == 12
    assert s["arrays_bytes"] > 0 and s["bytes_per_clip"] == pytest.approx(s["arrays_bytes"] / 3)
    assert s["descriptions"] == 1


def test_stats_cli_json_and_table(store):
    r = runner.invoke(app, ["stats", "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["status"] == {"missing": 1, "ok": 3}
    r = runner.invoke(app, ["stats", "--store", str(store)])
    assert r.exit_code == 0 and "clips per fold" in r.output and "91.7%" in r.output


# ---------------------------------------------------------------------------------------------- export
def test_export_source_paths(store, tmp_path):
    out = tmp_path / "ann"
    summary = export_dfer_clip(open_store(store), out, dataset_root=Path("/data/DFEW"))
    assert summary["files"] == {"DFEW_set_1_test.txt": 1, "DFEW_set_1_train.txt": 2,
                                "DFEW_set_2_test.txt": 2, "DFEW_set_2_train.txt": 1}
    assert summary["skipped"] == {"status missing": 1}
    assert (out / "DFEW_set_1_test.txt").read_text() == "/data/DFEW/Clip/clip_224x224/00001 70 0"
    assert (out / "DFEW_set_2_test.txt").read_text().splitlines() == [
        "/data/DFEW/Clip/clip_224x224/00002 33 3", "/data/DFEW/Clip/clip_224x224/00003 4 3"]


def test_export_frames_and_rerun(store, tmp_path):
    out = tmp_path / "ann"
    r = runner.invoke(app, ["export", "--store", str(store), "--out", str(out), "--frames"])
    assert r.exit_code == 0, r.output
    assert (out / "DFEW_set_1_train.txt").read_text().splitlines() == ["frames/00002 4 3", "frames/00003 4 3"]
    files = sorted((out / "frames" / "00002").iterdir())
    assert [f.name for f in files] == ["00001.jpg", "00002.jpg", "00003.jpg", "00004.jpg"]
    stored = zarr.open_group(str(store / layout.ARRAYS_DIR), mode="r")["frames"][1, 2]
    assert np.abs(np.asarray(Image.open(files[2])).astype(int) - stored).mean() < 3
    before = files[0].stat().st_mtime_ns
    r = runner.invoke(app, ["export", "--store", str(store), "--out", str(out), "--frames", "--absolute"])
    assert r.exit_code == 0 and files[0].stat().st_mtime_ns == before, "finished folders are not rewritten"
    first = (out / "DFEW_set_1_test.txt").read_text().split()[0]
    assert Path(first).is_absolute() and Path(first).is_dir()


def test_export_label_orders_for_mafw(tmp_path):
    store = make_store(tmp_path / "m", dataset="mafw", label_set="mafw")
    got = {}
    for order in ("dfer-clip", "mae-dfer", "s2d", "emoclip"):
        summary = export_dfer_clip(open_store(store), tmp_path / order, order=order)
        assert "MAFW_set_1_test.txt" in summary["files"]
        got[order] = (tmp_path / order / "MAFW_set_1_test.txt").read_text().split()[-1]
    # happiness: DFER-CLIP follows DFEW (0), MAE-DFER/EmoCLIP the official order (3), S2D alphabetical (6)
    assert got == {"dfer-clip": "0", "mae-dfer": "3", "s2d": "6", "emoclip": "3"}
    r = runner.invoke(app, ["export", "--store", str(store), "--out", str(tmp_path / "x"), "--order", "nope"])
    assert r.exit_code == 2 and "unknown label order" in r.output


def test_file_names():
    assert file_names("ferv39k", [1]) == {(1, "train"): "FERV39K_train.txt", (1, "test"): "FERV39K_test.txt"}
    assert file_names("mafw", [1])[(1, "test")] == "MAFW_set_1_test.txt"


# ------------------------------------------------------------------------------- a store from extract
@pytest.mark.slow
def test_commands_on_a_store_written_by_extract(tmp_path):
    """Real pipeline output (mediapipe on a real face photograph) read back by show, stats and export."""
    import subprocess
    import sys

    import cv2
    from skimage import data

    root = tmp_path / "data"
    (root / "me").mkdir(parents=True)
    face = cv2.resize(data.astronaut(), (192, 192))
    writer = cv2.VideoWriter(str(root / "me" / "clip a.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (192, 192))
    for t in range(8):
        writer.write(cv2.cvtColor(np.roll(face, 2 * t, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    (root / "empty.mp4").write_bytes(b"")
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("path,label,split\nme/clip a.mp4,happy,test\nempty.mp4,Sad,train\n")
    store = tmp_path / "store"
    fineprep = Path(sys.executable).parent / "fineprep"
    done = subprocess.run([str(fineprep), "extract", "--dataset", "folder", "--root", str(root), "--out", str(store),
                           "--labels", str(labels_csv), "--frames", "4", "--size", "64", "--workers", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    s = compute_stats(open_store(store))
    assert s["status"] == {"corrupt": 1, "ok": 1} and s["folds"]["1"]["test_ok"] == 1
    manifest = {r["clip_id"]: r for r in pq.read_table(store / layout.MANIFEST_FILE).to_pylist()}
    assert s["face_found_ratio"] == pytest.approx(manifest["me/clip a"]["face_found_ratio"])
    assert s["face_found_ratio"] > 0.5

    out = tmp_path / "sheet.png"
    r = runner.invoke(app, ["show", "--store", str(store), "--clip", "me/clip a", "--out", str(out), "--frames", "2"])
    assert r.exit_code == 0, r.output
    assert Image.open(out).size[0] == 2 * 200
    r = runner.invoke(app, ["show", "--store", str(store), "--clip", "empty", "--out", str(out)])
    assert r.exit_code == 2 and "corrupt" in r.output

    summary = export_dfer_clip(open_store(store), tmp_path / "ann", frames=True)
    assert summary["files"] == {"FOLDER_test.txt": 1} and summary["skipped"] == {"status corrupt": 1}
    assert (tmp_path / "ann" / "FOLDER_test.txt").read_text() == "frames/me/clip%20a 4 0"
    assert len(list((tmp_path / "ann" / "frames" / "me" / "clip%20a").glob("*.jpg"))) == 4


def test_export_mae_dfer_reads_back_as_the_videomae_loaders_read_it(store, tmp_path):
    """`--format mae-dfer`: MAE-DFER's split folders, `frame_dir label` lines read with
    `pd.read_csv(path, header=None, delimiter=' ')`, 0-based in MAE-DFER's order, frames globbed by name."""
    import glob

    import pandas as pd

    from fineschema import labels as fl

    out = tmp_path / "mae"
    r = runner.invoke(app, ["export", "--store", str(store), "--out", str(out), "--format", "mae-dfer", "--frames",
                            "--absolute"])
    assert r.exit_code == 0, r.output
    rows = {row["clip_id"]: row for row in open_store(store).rows}
    for k in (1, 2):
        split = out / "dfew" / "org" / f"split{k:02d}"
        for name in ("train", "test"):
            df = pd.read_csv(split / f"{name}.csv", header=None, delimiter=" ")
            assert df.shape[1] == 2
            for frame_dir, label in df.values:
                clip = Path(frame_dir).name
                frames = sorted(glob.glob(str(Path(frame_dir) / "*.jpg")))  # VideoReaderFrame's way
                assert len(frames) == 4 and Path(frames[0]).name == "00001.jpg"
                assert label == fl.to_public_index(rows[clip]["label"], "mae-dfer", "dfew")
                assert k in rows[clip][f"{name}_folds"]
        assert (split / "val.csv").read_text() == (split / "test.csv").read_text()  # MAE-DFER: val == test
    relative = runner.invoke(app, ["export", "--store", str(store), "--out", str(tmp_path / "rel"), "--format",
                                   "mae-dfer", "--frames"])
    assert relative.exit_code == 0, relative.output
    first = (tmp_path / "rel" / "dfew" / "org" / "split01" / "train.csv").read_text().split()[0]
    assert first.startswith("frames/") and (tmp_path / "rel" / first).is_dir()
