"""The face stage on real faces: small faces found, one person followed per shot, shot cuts respected.

Unit tests of the tile pyramid, the track linking and choice, the crop windows and the cut detector
run on constructed boxes and frames. The rest use the real footage beside the project
(`../shared/data/real-footage`: two talking-face videos and two official portraits, public domain)
and skip where that folder is absent: the talking faces, composites of the portraits pasted small
into 640x360 and 1920x1080 frames, and a clip cut together from three shots with known cut positions.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from extract_data import read_video_rgb

from fineprep.entries import ClipEntry
from fineprep.extract import clip, detect, faces, shots, tracks
from fineprep.extract.config import ExtractConfig
from fineprep.extract.sampling import segment_centres

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-footage"
VIDEOS = ("WDA_AlexandriaOcasioCortez_000.mp4", "WDA_KatieHill_000.mp4")
needs_footage = pytest.mark.skipif(not (REAL / VIDEOS[0]).exists(),
                                   reason=f"real footage not here ({REAL}); it lives in the workplace's shared/")


# ------------------------------------------------------------------------------- tiles (no model)
@pytest.mark.parametrize("w,h", [(640, 360), (1920, 1080), (512, 512)])
def test_tile_pyramid_reaches_small_faces_and_covers_the_frame(w, h):
    assert detect.tile_sides(256, 256, min_face=40) == []                  # the whole frame shows 20 px faces
    sides = detect.tile_sides(w, h, min_face=40)
    assert sides[0] <= 0.75 * max(w, h)
    assert sides == sorted(sides, reverse=True) and sides[0] <= min(w, h)
    assert all(a / b <= 2.0 + 1e-9 for a, b in zip(sides, sides[1:], strict=False))
    assert 40 * detect.DETECTOR_INPUT / sides[-1] >= detect.TARGET_PX - 0.5   # a 40 px face is >= 21.5 px there
    if w == h:
        assert sides[0] < w                                                  # the frame itself is not a tile
    for side in sides:
        for length in (w, h):
            starts = detect.tile_origins(length, side)
            assert starts[0] == 0 and starts[-1] + side >= length
            shared = [a + side - b for a, b in zip(starts, starts[1:], strict=False)]
            assert all(s >= side * detect.OVERLAP - 1 for s in shared), (side, starts)


def test_merge_keeps_one_box_per_face():
    boxes = np.array([[10, 10, 50, 50, 0.9],      # a face
                      [12, 12, 48, 49, 0.95],     # the same face from another tile
                      [20, 20, 35, 35, 0.8],      # a part of it
                      [100, 10, 140, 50, 0.85]],  # another face
                     dtype=np.float32)
    kept = detect.merge(boxes)
    assert kept[:, 4].tolist() == pytest.approx([0.95, 0.85])


# ------------------------------------------------------------------------------ tracks (no model)
def _box(cx, cy, side, score=0.9):
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, score], dtype=np.float32)


def test_a_missed_face_does_not_hand_its_track_to_the_neighbour():
    """Two people side by side; A is missed in frames 2-3 and walks on: A's track skips them, B's stays B's."""
    dets = []
    for t in range(8):
        a, b = _box(100 + 8 * t, 100, 60), _box(260, 100, 60)
        dets.append(np.stack([b] if t in (2, 3) else [a, b]))
    found = tracks.link(dets, np.zeros(8, np.int16))
    assert len(found) == 2
    by_x = sorted(found, key=lambda tr: tr.boxes[0][0])
    assert by_x[0].frames == [0, 1, 4, 5, 6, 7] and by_x[1].frames == list(range(8))
    assert all(abs((b[0] + b[2]) / 2 - 260) < 1 for b in by_x[1].boxes)


def test_tracks_never_cross_a_cut_and_far_or_resized_boxes_start_new_ones():
    dets = [np.stack([_box(100, 100, 60)])] * 3 + [np.stack([_box(104, 100, 60)])] * 3
    shot = np.array([0, 0, 0, 1, 1, 1], np.int16)
    assert [tr.frames for tr in tracks.link(dets, shot)] == [[0, 1, 2], [3, 4, 5]]
    assert tracks.link_cost(_box(100, 100, 60), _box(100, 100, 120), 1) == np.inf   # twice the size
    assert tracks.link_cost(_box(100, 100, 60), _box(200, 100, 60), 1) == np.inf    # 1.7 sides away
    assert np.isfinite(tracks.link_cost(_box(100, 100, 60), _box(130, 100, 66), 1))


def test_the_link_gate_widens_with_the_time_between_kept_frames():
    """A face 1.25 sides away continues its track 15 source frames later (a juggler between kept frames),
    not 1 frame later; past MAX_GATE nothing links, however far apart the frames."""
    a, b = _box(100, 100, 60), _box(175, 100, 60)                  # 75 px = 1.25 sides
    assert np.isinf(tracks.link_cost(a, b, gap=1)) and np.isinf(tracks.link_cost(a, b, 1, frames_apart=2))
    assert np.isfinite(tracks.link_cost(a, b, 1, frames_apart=15))
    assert np.isinf(tracks.link_cost(a, _box(100 + 60 * 2.1, 100, 60), 1, frames_apart=500))
    dets = [np.stack([_box(100 + 75 * t, 100, 60)]) for t in range(4)]
    shot = np.zeros(4, np.int16)
    assert len(tracks.link(dets, shot)) == 4                                   # kept frames side by side
    assert len(tracks.link(dets, shot, np.array([0, 15, 30, 45]))) == 1      # 15 source frames apart


def test_primary_largest_and_center_rules():
    w, h = 640, 360
    centre = [_box(280, 170, 70, 0.95)] * 6           # large, near the centre, whole shot
    edge_big = [_box(580, 90, 90, 0.95)] * 6          # larger, at the edge
    small = [_box(320, 185, 40, 0.9)] * 6             # most central, small
    dets = [np.stack([c, e, s]) for c, e, s in zip(centre, edge_big, small, strict=True)]
    shot = np.zeros(6, np.int16)
    found = tracks.link(dets, shot)

    def pick(rule):
        tr, _ = tracks.choose(found, shot, w, h, rule)[0]
        return tuple(np.round(tr.boxes[0][:2]))

    assert pick("primary") == tuple(np.round(centre[0][:2]))
    assert pick("largest") == tuple(np.round(edge_big[0][:2]))
    assert pick("center") == tuple(np.round(small[0][:2]))
    with pytest.raises(ValueError, match="primary, largest, center"):
        tracks.choose(found, shot, w, h, "biggest")


def test_a_face_seen_in_fewer_frames_scores_lower():
    shot = np.zeros(8, np.int16)
    whole = tracks.Track(0, list(range(8)), [_box(320, 180, 60)] * 8)
    part = tracks.Track(0, [0, 1], [_box(320, 180, 60)] * 2)
    assert tracks.score(part, 8, 640, 360) == pytest.approx(tracks.score(whole, 8, 640, 360) / 4)
    assert tracks.choose([part, whole], shot, 640, 360)[0][0] is whole


def test_windows_stay_inside_their_shot_and_their_track():
    """Shot 0 follows a face on the left, shot 1 one on the right, shot 2 has none: smoothing and
    interpolation in one shot never see another's boxes."""
    shot = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2], np.int16)
    left = tracks.Track(0, [0, 1, 3], [_box(100, 100, 50), _box(110, 100, 50), _box(130, 100, 50)])
    right = tracks.Track(1, [4, 6], [_box(500, 200, 80), _box(520, 200, 80)])
    chosen = {0: (left, 0.7), 1: (right, 0.5)}
    win = tracks.windows(chosen, shot, 640, 360, margin=0.5, sigma=1.0)
    alone = tracks.windows({0: (left, 0.7)}, shot[:4], 640, 360, margin=0.5, sigma=1.0)
    assert np.allclose(win.cx[:4], alone.cx) and np.allclose(win.side[:4], 75)
    assert win.cx[:4].max() < 131 and win.cx[4:7].min() > 499
    raw = tracks.windows(chosen, shot, 640, 360, margin=0.5, sigma=0.0)
    assert raw.cx[2] == pytest.approx(120) and raw.cx[5] == pytest.approx(510)   # gaps: linear in their track
    assert np.allclose(win.cx[7:], 320) and np.allclose(win.side[7:], 360)       # no face: centred square
    assert np.isnan(win.track_score[7:]).all() and win.track_score[:4].tolist() == pytest.approx([0.7] * 4)
    boxes = win.boxes()
    assert boxes.dtype == np.float32 and np.allclose(boxes[:, 2] - boxes[:, 0], win.side)


# -------------------------------------------------------------------------------- cuts (no model)
def _scene(image: np.ndarray, n: int, w: int = 320, h: int = 180, step: int = 3) -> list[np.ndarray]:
    """`n` frames of a slow pan over `image`, with sensor noise."""
    rng = np.random.default_rng(n)
    big = cv2.resize(image, (w + step * n, h + step * n))
    out = []
    for i in range(n):
        f = big[i * step // 2:i * step // 2 + h, i * step:i * step + w].astype(np.int16)
        out.append(np.clip(f + rng.integers(-6, 7, f.shape), 0, 255).astype(np.uint8))
    return out


def test_cuts_are_found_where_the_picture_changes_and_not_within_a_shot():
    from skimage import data

    frames = _scene(data.coffee(), 5) + _scene(data.astronaut(), 4) + _scene(data.rocket(), 6)
    assert shots.shot_index(frames).tolist() == [0] * 5 + [1] * 4 + [2] * 6
    d = shots.changes(frames)
    assert d[[4, 8]].min() > shots.CUT_CHANGE > np.delete(d, [4, 8]).max()
    watcher = shots.CutWatcher()
    for i, f in enumerate(frames):
        watcher(i, f[..., ::-1])                                             # BGR, as decoded
        watcher(i, f[..., ::-1])                                             # a frame seen twice counts once
    assert watcher.cuts == [5, 9] and watcher.shots([0, 4, 5, 8, 9, 14]).tolist() == [0, 0, 1, 1, 2, 2]
    darker = [(f * 0.9).astype(np.uint8) for f in _scene(data.coffee(), 3)]
    assert shots.shot_index(_scene(data.coffee(), 3) + darker).max() == 0    # a 10 % exposure step is no cut
    assert shots.shot_index([]).shape == (0,)


# ---------------------------------------------------------------------------------- real footage
def _read(name: str, step: int = 1) -> list[np.ndarray]:
    return read_video_rgb(REAL / name, step)


def _rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(REAL / name)), cv2.COLOR_BGR2RGB)


# Face boxes (x0, y0, x1, y1) of the portraits, measured once with the detector on the full-size images.
PORTRAITS = {"obama.jpg": (352, 145, 631, 424), "biden.jpg": (416, 238, 754, 576)}


def _head(image: np.ndarray, box, face_px: float) -> tuple[np.ndarray, np.ndarray]:
    """A head-and-shoulders cut-out of `image` scaled so its face box is `face_px` high, and that box in it."""
    x0, y0, x1, y1 = box
    side = y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx0, hy0 = int(max(0, cx - 1.1 * side)), int(max(0, cy - 1.2 * side))
    hx1, hy1 = int(min(image.shape[1], cx + 1.1 * side)), int(min(image.shape[0], cy + 1.4 * side))
    k = face_px / side
    head = cv2.resize(image[hy0:hy1, hx0:hx1], None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    return head, np.array([(x0 - hx0) * k, (y0 - hy0) * k, (x1 - hx0) * k, (y1 - hy0) * k])


def _paste(canvas: np.ndarray, head: np.ndarray, box: np.ndarray, x: int, y: int) -> np.ndarray:
    h, w = head.shape[:2]
    canvas[y:y + h, x:x + w] = head[: canvas.shape[0] - y, : canvas.shape[1] - x]
    return box + [x, y, x, y]


def _background(w: int, h: int, seed: int) -> np.ndarray:
    from skimage import data

    rng = np.random.default_rng(seed)
    bg = cv2.resize(data.coffee(), (w, h)).astype(np.float32) * rng.uniform(0.5, 0.9)
    return bg.astype(np.uint8)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def models():
    return faces.get_models(faces.resolve_landmarker(None)[0])


def _extract(path: Path, frames: int, models, **settings) -> clip.ClipResult:
    from fineprep.extract.parsing import get_parser

    entry = ClipEntry(path.stem, "folder", path.name)
    with models.tracker("image") as tracker:
        return clip.extract_clip(entry, path.parent, ExtractConfig(frames=frames, size=160, **settings), models,
                                 tracker, get_parser("mesh"))


@needs_footage
@pytest.mark.slow
def test_talking_faces_are_found_in_98_percent_of_kept_frames(tmp_path, models):
    found = total = 0
    for name in VIDEOS:
        result = _extract(REAL / name, 25, models)
        a = result.arrays
        assert result.status == "ok", result.error
        assert (a["shot"] == 0).all() and (result.source_width, result.source_height) == (512, 512)
        assert np.isfinite(a["track_score"]).all() and (a["track_score"] > 0).all()
        side = a["boxes"][:, 2] - a["boxes"][:, 0]
        assert (side > 200).all() and (side < 800).all()              # a large face with its margin
        found += int(a["face_found"].sum())
        total += len(a["face_found"])
    assert found >= 0.98 * total


@needs_footage
@pytest.mark.slow
@pytest.mark.parametrize("w,h,sizes", [(640, 360, (42, 58, 80)), (1920, 1080, (44, 64, 90, 120))])
def test_small_portraits_in_wide_frames_are_all_found(models, w, h, sizes):
    """Several people, faces 40-120 px high, pasted into a wide frame at known places: each one is found,
    and nothing else is."""
    sources = [(_rgb(n), b) for n, b in PORTRAITS.items()]
    canvas = _background(w, h, len(sizes))
    truth = []
    x = 20
    for k, px in enumerate(sizes):
        image, box = sources[k % 2]
        head, hbox = _head(image, box, px)
        y = (h - head.shape[0]) // 2 + (25 if k % 2 else -25)
        assert x + head.shape[1] <= w
        truth.append(_paste(canvas, head, hbox, x, max(0, y)))
        x += head.shape[1] + w // 16
    boxes = detect.TiledDetector(models.detector).detect(canvas)
    for t in truth:
        assert max((_iou(t, b) for b in boxes), default=0) > 0.4, (t, boxes)
    assert len(boxes) == len(truth), boxes


def _cut_clip(path: Path) -> tuple[list[int], list[np.ndarray]]:
    """A 960x540 clip of three shots (cuts at frames 60 and 120): a close-up of one talking face; a wide
    shot of the other talking face (~110 px) beside two smaller portraits; the first face again, small
    and off-centre. Returns the cut frames and the primary face's true box per frame."""
    w, h, n = 960, 540, 60
    a, b = _read(VIDEOS[0]), _read(VIDEOS[1])
    boxes_a = [_face_box(f) for f in a[: 2 * n]]
    boxes_b = [_face_box(f) for f in b[:n]]
    portraits = [_head(_rgb(name), box, px) for (name, box), px in zip(PORTRAITS.items(), (60, 52), strict=True)]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
    truth = []
    for i in range(3 * n):
        canvas = _background(w, h, 1 + i // n)
        if i < n:                                                    # close-up, centred
            src, box, k, x, y = a[i], boxes_a[i], 1.0, 224, 14
        elif i < 2 * n:                                              # wide shot of B, two others beside
            src, box, k, x, y = b[i - n], boxes_b[i - n], 0.55, 350 + (i - n), 120
            for (head, hbox), px in zip(portraits, (40, 700), strict=True):
                _paste(canvas, head, hbox, px, 180)
        else:                                                        # A again, smaller, off-centre
            src, box, k, x, y = a[i - n], boxes_a[i - n], 0.5, 560, 200
        img = cv2.resize(src, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        canvas[y:y + img.shape[0], x:x + img.shape[1]] = img
        truth.append(np.asarray(box) * k + [x, y, x, y])
        vw.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    vw.release()
    return [n, 2 * n], truth


_FULL = {}


def _face_box(frame: np.ndarray) -> np.ndarray:
    """The one large face of a 512x512 talking-face frame (detector on the whole frame)."""
    if "det" not in _FULL:
        _FULL["det"] = detect.TiledDetector(faces.get_models(faces.resolve_landmarker(None)[0]).detector)
    boxes = _FULL["det"].detect(frame)
    return boxes[np.argmax(boxes[:, 4]), :4]


@needs_footage
@pytest.mark.slow
def test_cut_clip_follows_the_primary_face_in_each_shot_and_never_smooths_across_a_cut(tmp_path, models):
    path = tmp_path / "cuts.mp4"
    cuts, truth = _cut_clip(path)
    result = _extract(path, 16, models)
    assert result.status == "ok", result.error
    a = result.arrays
    kept = segment_centres(3 * 60, 16)
    true_shot = np.searchsorted(cuts, kept, side="right")
    assert a["shot"].tolist() == true_shot.tolist()                  # each cut found, no other
    centres = (a["boxes"][:, :2] + a["boxes"][:, 2:]) / 2
    for t, idx in enumerate(kept):                                   # every window on that shot's primary
        x0, y0, x1, y1 = truth[idx]
        assert x0 < centres[t, 0] < x1 and y0 < centres[t, 1] < y1, (t, idx, centres[t], truth[idx])
    assert a["face_found"].mean() >= 0.9
    for s in range(3):                                               # one track per shot: one score
        assert len(set(a["track_score"][a["shot"] == s].tolist())) == 1


@needs_footage
@pytest.mark.slow
def test_a_frame_without_a_face_stores_zeros_not_a_neighbours_values(tmp_path, models):
    """Frames with the face covered: face_found false and nothing copied; too few found frames: few_faces."""
    frames = _read(VIDEOS[1], step=4)[:40]
    path = tmp_path / "covered.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (512, 512))
    for i, f in enumerate(frames):
        g = f.copy()
        if 10 <= i < 20:
            g[60:460, 100:420] = 128                                 # the face hidden by a grey card
        vw.write(cv2.cvtColor(g, cv2.COLOR_RGB2BGR))
    vw.release()
    result = _extract(path, 8, models)
    a = result.arrays
    hidden = np.array([10 <= i < 20 for i in segment_centres(40, 8)])
    assert result.status == "ok" and hidden.sum() == 2
    assert (a["face_found"] == ~hidden).all()
    assert not a["landmarks"][hidden].any() and not a["blendshapes"][hidden].any()
    assert not a["parsing"][hidden].any()
    assert a["landmarks"][~hidden].any(axis=(1, 2)).all()
    assert (a["landmark_score"][~hidden] > 0.9).all() and (a["landmark_score"][hidden] < 0.5).all()
    strict = _extract(path, 8, models, min_found_ratio=0.9)
    assert strict.status == "few_faces" and "6 of 8" in strict.error and strict.arrays is not None


@needs_footage
@pytest.mark.slow
def test_a_small_face_looking_down_is_found_in_14_of_16_frames(models):
    """juggle.mp4: a ~35 px face in 1280x720, mostly looking down, moving fast between kept frames."""
    result = _extract(REAL / "juggle.mp4", 16, models)
    a = result.arrays
    assert result.status == "ok" and int(a["face_found"].sum()) >= 14
    tracked = np.isfinite(a["track_score"])
    assert (a["face_found"] == (tracked & (a["landmark_score"] >= 0.5))).all()
    fussy = _extract(REAL / "juggle.mp4", 16, models, min_landmark_score=0.99)
    f = fussy.arrays
    assert (f["face_found"] == (f["landmark_score"] >= 0.99)).all() and f["face_found"].sum() < a["face_found"].sum()


@needs_footage
def test_centerface_sees_the_blurred_children_blazeface_misses_and_draws_blazeface_boxes(models):
    """bedroom.mp4: small blurred faces. CenterFace finds a face in nearly every kept frame; on a sharp
    portrait its converted box lies where BlazeFace's does."""
    from fineprep.extract import centerface

    frames = read_video_rgb(REAL / "bedroom.mp4")
    kept = [frames[i] for i in segment_centres(len(frames), 8)]
    second = centerface.CenterFace()
    assert sum(len(second.detect(f)) > 0 for f in kept) >= 7
    portrait = cv2.cvtColor(cv2.imread(str(REAL / "obama.jpg")), cv2.COLOR_BGR2RGB)
    blaze = detect.TiledDetector(models.detector).detect(portrait)
    ours = second.detect(portrait)
    assert len(blaze) == 1 and len(ours) == 1 and _iou(blaze[0], ours[0]) > 0.6


def test_a_store_of_the_previous_schema_is_refused_in_one_line(tmp_path):
    from toy_store import write_toy_store

    from fineschema import SCHEMA_VERSION, StoreError, check_store

    old = write_toy_store(tmp_path / "old", clips_per_class=1, version=SCHEMA_VERSION - 1)
    with pytest.raises(StoreError) as err:
        check_store(old)
    message = str(err.value)
    assert "\n" not in message and "re-run `fineprep extract --overwrite`" in message
    assert f"schema version {SCHEMA_VERSION - 1}" in message and "missing" not in message
    check_store(write_toy_store(tmp_path / "new", clips_per_class=1))


def test_the_trainer_ignores_blendshapes_of_frames_without_a_face():
    """What a not-found frame holds (zeros, or anything) never reaches the blendshape embedding."""
    import torch

    from finetrain.model.model import TemporalHead

    head = TemporalHead(dim=8, frames=4, layers=1, heads=2, mlp_ratio=2.0, dropout=0.0).eval()
    torch.nn.init.normal_(head.out.weight)
    x = torch.randn(2, 4, 8)
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    y = x.clone()
    y[0, 1] = 100.0                                                          # junk on the masked frame
    with torch.no_grad():
        a, b = head(x, mask), head(y, mask)
        assert torch.allclose(a, b, atol=1e-5)
        assert not torch.allclose(head(x), head(y), atol=1e-3)               # unmasked, it would count
        assert torch.allclose(head(x, torch.ones(2, 4, dtype=torch.bool)), head(x), atol=1e-5)


def test_the_detector_weights_are_identified_by_their_own_hash():
    import hashlib
    import zipfile

    path, bundle_sha = faces.resolve_landmarker(None)
    member = hashlib.sha256(zipfile.ZipFile(path).read("face_detector.tflite")).hexdigest()
    assert faces.detector_sha256(path) == member != bundle_sha and len(member) == 64


def test_extract_refuses_an_unknown_face_rule(tmp_path):
    from typer.testing import CliRunner

    from fineprep.cli import app

    result = CliRunner().invoke(app, ["extract", "--dataset", "folder", "--root", str(tmp_path),
                                      "--out", str(tmp_path / "s"), "--face", "biggest"])
    flat = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "'biggest' is not one of 'primary', 'largest', 'center'" in flat


def _hard_faces():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "hard_faces.py"
    spec = importlib.util.spec_from_file_location("hard_faces", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_footage
def test_hard_cases_have_their_true_points_and_a_clean_face_is_scored_right(models, tmp_path):
    """bench/hard_faces.py: every hand-placed face is read, and a clean 100 px 300-W face pasted into a
    640x360 frame beside two smaller faces is found, boxed and meshed close to its true points."""
    from fineprep.extract.parsing import get_parser

    hard = _hard_faces()
    people = hard.read_faces(REAL)
    counts = {}
    for p in people:
        counts.setdefault(p["set"], set()).add(len(p["points"]))
    assert len(people) == 17 and counts["300w"] == counts["300wlp"] == counts["menpo"] == {68}
    assert len(set(hard.MESH_68.tolist())) == 68
    i = next(k for k, p in enumerate(people) if p["set"] == "300w")
    frame, truth = hard.make_case(people, i, 100, "clean", (640, 360), seed=0)
    folder = tmp_path / "case"
    folder.mkdir()
    cv2.imwrite(str(folder / "0001.png"), frame[..., ::-1])
    entry = ClipEntry("case", "folder", "case", media="frames")
    with models.tracker() as tracker:
        result = clip.extract_clip(entry, tmp_path, ExtractConfig(frames=1, crop_frame_sources=True), models,
                                   tracker, get_parser("mesh"))
    got = hard.score_case(result, truth)
    assert got["found"] and got["iou"] > 0.6 and got["nme"] < 0.1, got
