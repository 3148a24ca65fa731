"""Small media for the extract tests: videos panned over a real face photograph, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data


def _face_frame(i: int, size: int, shift: int) -> np.ndarray:
    img = data.astronaut()
    x0 = 60 + shift * i
    return cv2.resize(img[0:300, x0:x0 + 300], (size, size))


def write_video(path: Path, n: int, *, size: int = 256, shift: int = 2, fourcc: str = "mp4v", face: bool = True) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (size, size))
    assert vw.isOpened(), path
    for i in range(n):
        frame = _face_frame(i, size, shift) if face else np.full((size, size, 3), 40 + i, np.uint8)
        vw.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def write_frames(folder: Path, n: int, size: int = 224) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    img = data.astronaut()
    for i in range(n):
        crop = cv2.resize(img[20 + i:260 + i, 120:360], (size, size))
        cv2.imwrite(str(folder / f"{i + 1}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return folder


def make_folder_dataset(root: Path, good: int = 4) -> Path:
    """`good` face videos, a short one, a frame folder, and one of each bad input."""
    root.mkdir(parents=True, exist_ok=True)
    for k in range(good):
        write_video(root / f"clip{k}.mp4", 30 + 10 * k)
    write_video(root / "short.mp4", 5)
    write_frames(root / "framesA", 12)
    (root / "zero.mp4").write_bytes(b"")
    whole = write_video(root / "whole.avi", 60, fourcc="MJPG").read_bytes()
    (root / "whole.avi").unlink()
    (root / "cut.avi").write_bytes(whole[: len(whole) // 3])      # header claims 60 frames, a third remain
    mp4 = (root / "clip0.mp4").read_bytes()
    (root / "trunc.mp4").write_bytes(mp4[: len(mp4) // 2])           # index (moov) cut off
    (root / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    write_video(root / "noface.mp4", 20, face=False)
    bad = write_frames(root / "framesBad", 4)
    (bad / "2.jpg").write_bytes(b"not an image")
    return root


def read_video_rgb(path: Path, step: int = 1) -> list[np.ndarray]:
    """Every `step`-th frame of a video, decoded with OpenCV and turned to RGB (tests' reference decode)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames[::step]
