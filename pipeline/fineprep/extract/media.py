"""Decode only the frames a clip keeps, from a video file or a folder of image files.

Every failure becomes a `ClipFailure` carrying a manifest status and a one-line reason, so the
batch records it on the clip's row and moves on.

Images are sized from their header before any pixel is decoded: one frame above `max_pixels` is
refused (a 26000 x 26000 JPEG would take 2 GB to decode and kill its worker), and a frame far larger
than the crop needs is decoded at 1/2, 1/4 or 1/8 scale (libjpeg scales while decoding, so the full
image never exists in memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fineschema import tables

from .sampling import segment_centres

# Past this many frames between two wanted frames, seeking beats decoding forward.
SEEK_GAP = 48

# Largest frame decoded, in pixels: an 8K frame is 33 MP; above 50 MP a "frame" is a scan or a bomb,
# and decoding it (3 bytes per pixel, twice over for the colour conversion) would take a worker's memory.
DEFAULT_MAX_PIXELS = 50_000_000

# A frame is decoded reduced only while the reduced short side keeps this many times the side needed.
REDUCE_MARGIN = 4
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


class ClipFailure(Exception):
    """A clip that cannot be extracted; `status` is a manifest status, the message its one-line reason."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Sampled:
    """The kept frames of a clip (RGB uint8, full source resolution) and where they came from."""

    frames: list[np.ndarray]
    indices: list[int]
    num_source_frames: int
    fps: float | None


def read_video(path: Path, frames: int, max_pixels: int | None = None, watch=None) -> Sampled:
    """Open `path`, pick `frames` segment-centre indices and decode just those (grab forward, seek on big gaps).

    `watch(index, bgr)`, when given, sees every decoded frame in order (the ones between kept frames too,
    except across a seek): the shot-cut detector compares neighbouring frames."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # OpenCV crashes the whole process on such a path
        name = path.name.encode("utf-8", "backslashreplace").decode()
        raise ClipFailure(tables.STATUS_BAD_PATH, f"video {name}: the name is not valid UTF-8; rename it") from None
    if not path.exists():
        raise ClipFailure(tables.STATUS_MISSING, f"video {path.name} not found")
    if path.stat().st_size == 0:
        raise ClipFailure(tables.STATUS_CORRUPT, f"video {path.name} is an empty (zero-byte) file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ClipFailure(tables.STATUS_CORRUPT, f"video {path.name} cannot be opened (undecodable or truncated)")
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        check_pixels(width, height, max_pixels, f"video {path.name}")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or None
        if count <= 0:
            count = _count_frames(cap)
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if count <= 0:
            raise ClipFailure(tables.STATUS_CORRUPT, f"video {path.name} has no decodable frames")
        indices = segment_centres(count, frames)
        decoded: dict[int, np.ndarray] = {}
        pos = 0  # index of the frame the next grab() returns
        for idx in sorted(set(indices)):
            if idx - pos > SEEK_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                pos = idx
            ok = True
            while ok and pos <= idx:
                ok = cap.grab()
                pos += 1
                if ok and watch is not None and pos <= idx:
                    between = cap.retrieve()[1]
                    if between is not None:
                        watch(pos - 1, between)
            ok = ok and pos == idx + 1
            image = cap.retrieve()[1] if ok else None
            if image is not None and watch is not None:
                watch(idx, image)
            if image is None:
                raise ClipFailure(
                    tables.STATUS_CORRUPT,
                    f"video {path.name} is truncated or damaged: frame {idx} of {count} could not be decoded",
                )
            decoded[idx] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return Sampled([decoded[i] for i in indices], indices, count, fps)
    finally:
        cap.release()


def _count_frames(cap: cv2.VideoCapture) -> int:
    n = 0
    while cap.grab():
        n += 1
    return n


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Refuse a frame above `max_pixels` before it is decoded, naming its size and the limit."""
    if max_pixels and width * height > max_pixels:
        raise ClipFailure(
            tables.STATUS_ERROR,
            f"{what} is {width}x{height} ({width * height / 1e6:.0f} MP), above the {max_pixels / 1e6:g} MP "
            f"limit: decoding it would take ~{3 * width * height / 2**30:.1f} GiB of worker memory; "
            "raise --max-pixels to extract it anyway",
        )


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header, nothing decoded; None when PIL cannot identify it."""
    import io
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the limit here is max_pixels
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Exception:  # noqa: BLE001 - not an image PIL knows: let the decoder say so
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def reduction(width: int, height: int, need_side: int | None) -> int:
    """1, 2, 4 or 8: the largest scale-down that leaves the short side REDUCE_MARGIN x `need_side`."""
    if not need_side:
        return 1
    for k in (8, 4, 2):
        if min(width, height) // k >= REDUCE_MARGIN * need_side:
            return k
    return 1


def decode_image(data: bytes, where: str, *, max_pixels: int | None = None,
                 need_side: int | None = None) -> np.ndarray | None:
    """BGR image from encoded bytes: header checked against `max_pixels`, decoded reduced when far larger
    than `need_side`. None when the bytes are not an image OpenCV can decode."""
    size = header_size(data)
    flag = cv2.IMREAD_COLOR
    if size is not None:
        check_pixels(size[0], size[1], max_pixels, f"image {where}")
        flag = _REDUCED.get(reduction(size[0], size[1], need_side), cv2.IMREAD_COLOR)
    return cv2.imdecode(np.frombuffer(data, np.uint8), flag)


def read_image_files(files: list[Path], frames: int, where: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     need_side: int | None = None) -> Sampled:
    """Read the segment-centre images among `files` (already sorted); `where` names the folder in errors.

    `need_side`: the side (pixels) the frames are brought down to, so much larger ones decode reduced;
    None decodes every frame at full size.
    """
    if not files:
        raise ClipFailure(tables.STATUS_CORRUPT, f"frame folder {where} holds no image files")
    indices = segment_centres(len(files), frames)
    decoded: dict[int, np.ndarray] = {}
    for idx in sorted(set(indices)):
        f = files[idx]
        image = None
        try:
            data = f.read_bytes()
        except OSError:
            data = b""
        if data:
            image = decode_image(data, f"{where}/{f.name}", max_pixels=max_pixels, need_side=need_side)
        if image is None:
            raise ClipFailure(tables.STATUS_CORRUPT, f"image {where}/{f.name} is unreadable (empty or not an image)")
        decoded[idx] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return Sampled([decoded[i] for i in indices], indices, len(files), None)
