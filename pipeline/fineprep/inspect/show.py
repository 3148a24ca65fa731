"""`fineprep show`: one clip's stored frames as a contact sheet, with what the extractor found on them.

Each panel is a stored face crop with the parsing map blended over it (one colour per class,
background left clear) and the landmarks as dots; frames where the landmarker found no face (stored
as zeros, nothing drawn) are marked "no face" in red, and each panel names its shot. The title names
the clip, label and status; the caption and the newest description
are printed underneath, so a look at one image tells whether the store is right.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from fineschema import layout

from .store import InspectError, StoreView, description_text

# RGB per parsing class (index = class value) of the mesh parser; background is never drawn.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (255, 200, 120), (140, 70, 20), (40, 160, 255), (255, 120, 0), (230, 30, 60), (150, 0, 150),
)
# FaceXFormer's classes (fineschema.layout.PARSING_CLASS_SETS["facexformer"]), left and right apart.
_FACEXFORMER = (
    (0, 0, 0), (255, 200, 120), (140, 70, 20), (200, 150, 0), (40, 160, 255), (0, 200, 110), (255, 120, 0),
    (230, 30, 60), (150, 0, 150), (255, 60, 160), (60, 60, 160),
)


def palette_for(classes) -> tuple[tuple[int, int, int], ...]:
    """The colours for a store's `parsing_classes`: one per class it declares."""
    if list(classes) == list(layout.PARSING_CLASS_SETS["facexformer"]):
        return _FACEXFORMER
    return PALETTE if len(classes) <= len(PALETTE) else PALETTE + tuple(
        ((97 * i) % 256, (57 * i) % 256, (151 * i) % 256) for i in range(len(PALETTE), len(classes)))


def pick_frames(total: int, k: int | None) -> list[int]:
    """`k` evenly spread frame positions out of `total` (all of them when k is None, 0 or too big)."""
    if not k or k >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / (k - 1)) for i in range(k)}) if k > 1 else [total // 2]


def overlay(frame: np.ndarray, parsing: np.ndarray, alpha: float = 0.45, palette=PALETTE) -> np.ndarray:
    """Blend class colours over an RGB frame wherever the class is not background."""
    colours = np.asarray(palette, dtype=np.float32)[np.clip(parsing, 0, len(palette) - 1)]
    mask = (parsing > 0)[..., None]
    out = np.where(mask, (1 - alpha) * frame.astype(np.float32) + alpha * colours, frame.astype(np.float32))
    return out.round().clip(0, 255).astype(np.uint8)


def read_clip_arrays(store: StoreView, row: dict) -> dict[str, np.ndarray]:
    """The clip's frames, parsing, landmarks and face flags; a chunk that does not decode to the layout's
    shape is one `InspectError` naming the clip and the array, not a codec traceback."""
    data = {}
    frames, size = int(store.attrs.get("frames", 0)), int(store.attrs.get("size", 0))
    for spec in layout.ARRAYS:
        if spec.name not in ("frames", "parsing", "landmarks", "face_found", "shot"):
            continue
        try:
            value = store.arrays(row, names=(spec.name,))[spec.name]
        except Exception as exc:  # codec errors differ by compressor: anything here means a damaged chunk
            reason = (str(exc).splitlines() or [""])[0][:160] or type(exc).__name__
            raise InspectError(
                f"clip {row['clip_id']!r}: arrays.zarr/{spec.name} chunk {int(row['store_index'])} cannot be read "
                f"({reason}); the store is damaged: `fineprep validate --store {store.root} --deep` lists every such "
                "chunk; re-extract (`fineprep extract --overwrite`)"
            ) from None
        want = tuple(spec.concrete_shape(1, frames, size))[1:] if frames and size else value.shape
        if value.shape != want:
            raise InspectError(
                f"clip {row['clip_id']!r}: arrays.zarr/{spec.name} holds shape {value.shape}, the layout wants "
                f"{want}; the store is damaged there: re-extract it (`fineprep extract --overwrite`)"
            )
        data[spec.name] = value
    return data


def render_sheet(store: StoreView, clip_id: str, out: Path, frames: int | None = None) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    row = store.ok_row(clip_id)
    data = read_clip_arrays(store, row)
    classes = tuple(store.attrs.get("parsing_classes", layout.PARSING_CLASSES))
    palette = palette_for(classes)
    total = data["frames"].shape[0]
    chosen = pick_frames(total, frames)
    size = data["frames"].shape[1]
    cols = min(len(chosen), 8)
    rows = math.ceil(len(chosen) / cols)
    texts = []
    if row.get("caption_en"):
        texts.append("caption: " + row["caption_en"])
    desc = description_text(store.latest_descriptions().get(clip_id))
    if desc:
        texts.append("description: " + desc)
    width_chars = max(60, cols * 26)
    wrapped = "\n".join(textwrap.fill(t, width_chars) for t in texts)
    text_h = 0.2 * (wrapped.count("\n") + 1) + 0.3 if wrapped else 0.0
    panel = 2.0
    fig = Figure(figsize=(cols * panel, rows * panel + 0.9 + text_h), dpi=100)
    FigureCanvasAgg(fig)
    top = 1 - 0.85 / fig.get_figheight()
    bottom = (text_h + 0.2) / fig.get_figheight()
    grid = fig.add_gridspec(rows, cols, top=top, bottom=bottom, left=0.02, right=0.98, wspace=0.05, hspace=0.25)
    indices = row.get("frame_indices") or list(range(total))
    for n, t in enumerate(chosen):
        ax = fig.add_subplot(grid[n // cols, n % cols])
        ax.imshow(overlay(data["frames"][t], data["parsing"][t], palette=palette), interpolation="nearest")
        pts = data["landmarks"][t]
        if data["face_found"][t]:
            ax.scatter(pts[:, 0] * size, pts[:, 1] * size, s=0.6, c="#00ff66", linewidths=0)
        src = indices[t] if t < len(indices) else t
        shot = f" shot {int(data['shot'][t])}" if "shot" in data else ""
        ax.set_title(f"t={t} src={src}{shot}" + ("" if data["face_found"][t] else " (no face)"), fontsize=7,
                     color="black" if data["face_found"][t] else "red")
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        ax.axis("off")
    label = row.get("label") or "unlabelled"
    if row.get("compound_label") and row["compound_label"] != label:
        label += f" ({row['compound_label']})"
    fig.suptitle(f"{clip_id}  |  {row['dataset']}  |  label: {label}  |  status: {row['status']}  |  "
                 f"{total} frames, face found {float(np.mean(data['face_found'])):.0%}", fontsize=10)
    handles = [Patch(color=np.asarray(palette[i]) / 255, label=name) for i, name in enumerate(classes) if i > 0]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, top + 0.42 / fig.get_figheight()))
    if wrapped:
        fig.text(0.02, bottom - 0.1 / fig.get_figheight(), wrapped, fontsize=8, va="top", ha="left")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
